//! The connection type handed to hyper: the dialled stream (TCP, or a tunnel through an
//! upstream proxy), plain or with TLS to the origin on top.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::proxy::DialedStream;

/// `Left`: plain; `Right`: TLS to the origin on top of the dialled stream.
pub type MaybeTls = Either<DialedStream, Box<TlsStream<DialedStream>>>;

/// hyper-facing wrapper; reports whether HTTP/2 was negotiated (for the later h2 issue).
pub struct UpstreamIo(pub TokioIo<MaybeTls>);

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        match self.0.inner() {
            Either::Right(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => c.negotiated_h2(),
            _ => c,
        }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}
