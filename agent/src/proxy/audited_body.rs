//! A response body that writes the request's audit record when it is done: after the last
//! byte reached the client, or when the client went away. `duration_ms` therefore covers
//! streamed responses (SSE, gRPC streams) end to end. Every frame passes through unchanged,
//! trailers included (gRPC's `grpc-status`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::audit::{Action, PendingAudit};
use crate::message::{BoxError, ProxyBody};

pub struct AuditedBody {
    inner: ProxyBody,
    audit: Option<(PendingAudit, Action, u16)>,
}

impl AuditedBody {
    pub fn new(inner: ProxyBody, audit: PendingAudit, action: Action, status: u16) -> Self {
        Self {
            inner,
            audit: Some((audit, action, status)),
        }
    }

    /// A body whose request is audited elsewhere (an upgraded WebSocket, audited on close).
    pub fn unaudited(inner: ProxyBody) -> Self {
        Self { inner, audit: None }
    }

    fn finish(&mut self) {
        if let Some((audit, action, status)) = self.audit.take() {
            audit.finish(action, status);
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = res {
            self.finish();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::audit::{AuditRecord, AuditSink};
    use crate::message::body;

    fn pending(sink: &Arc<AuditSink>) -> PendingAudit {
        PendingAudit::new(AuditRecord::default(), sink.clone())
    }

    fn written(sink: &AuditSink) -> u64 {
        let c = &sink.counters;
        [&c.allow, &c.reject, &c.stub, &c.error, &c.client_cancel]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    #[tokio::test]
    async fn the_record_is_written_once_when_the_body_ends() {
        let sink = Arc::new(AuditSink::discard());
        let mut b = AuditedBody::new(body::full("hello"), pending(&sink), Action::Stub, 200);
        assert_eq!(b.size_hint().exact(), Some(5));
        let first = b.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hello");
        assert_eq!(written(&sink), 0, "not before the last frame was sent");
        assert!(b.frame().await.is_none());
        assert_eq!(sink.counters.stub.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(written(&sink), 1, "exactly once");
    }

    #[tokio::test]
    async fn a_body_dropped_mid_stream_is_still_audited_once() {
        let sink = Arc::new(AuditSink::discard());
        let b = AuditedBody::new(body::full("never read"), pending(&sink), Action::Allow, 200);
        drop(b);
        assert_eq!(sink.counters.allow.load(Ordering::Relaxed), 1);
        assert_eq!(written(&sink), 1);
    }

    #[tokio::test]
    async fn frames_and_trailers_pass_through_unchanged() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let inner = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        let sink = Arc::new(AuditSink::discard());
        let b = AuditedBody::new(inner, pending(&sink), Action::Allow, 200);
        let collected = b.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "ab");
        assert_eq!(sink.counters.allow.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_unaudited_body_writes_nothing() {
        let sink = Arc::new(AuditSink::discard());
        let b = AuditedBody::unaudited(body::empty());
        assert!(b.is_end_stream());
        let _ = b.collect().await.unwrap();
        assert_eq!(written(&sink), 0);
    }
}
