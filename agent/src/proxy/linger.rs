//! Early answers on HTTP/2. A request refused before its body was read (a denied POST) is
//! answered at once; RFC 9113 §8.1 then lets the server reset the stream with NO_ERROR, and h2
//! does so when the last handle on the request body goes. A client still uploading at that
//! moment may take the reset as a failure (curl 7.x exits 92 with the 403 already in hand), so
//! the body that was not read is drained in the background, bounded in bytes and time: a
//! client that finishes its upload within the bounds sees a clean stream end, and one that
//! does not gets the NO_ERROR reset.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// At most this much of an unread request body is drained after an early answer.
const LINGER_BYTES: usize = 1 << 20;
/// ... and for at most this long.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// ... and stops at the first pause this long.
const LINGER_PAUSE: Duration = Duration::from_millis(250);

/// A client's request body that drains itself on drop when it came over HTTP/2 unfinished.
pub struct ClientBody {
    inner: Option<Incoming>,
    h2: bool,
}

impl ClientBody {
    pub fn new(inner: Incoming, version: http::Version) -> Self {
        Self {
            inner: Some(inner),
            h2: version == http::Version::HTTP_2,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.h2 || body.is_end_stream() {
            return;
        }
        // HTTP/1 needs no help: hyper closes a connection whose request body was left unread.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(body));
        }
    }
}

/// Reads and discards (releasing flow-control window as it goes) until the client ends the
/// stream, a bound is hit, the client pauses, or the stream fails; dropping the body then
/// resets the stream with NO_ERROR.
async fn drain(mut body: Incoming) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut read = 0usize;
    while read <= LINGER_BYTES {
        // A client that stopped uploading when the answer came waits for the reset: not long.
        let wait = deadline.min(tokio::time::Instant::now() + LINGER_PAUSE);
        match tokio::time::timeout_at(wait, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}
