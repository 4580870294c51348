//! A response body that writes the request's audit record when it is done: after the last
//! byte reached the client, or when the client went away. `duration_ms` therefore covers
//! streamed responses (SSE, gRPC streams) end to end. Every frame passes through unchanged,
//! trailers included (gRPC's `grpc-status`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::audit::{Action, PendingAudit};
use crate::transform::ProxyBody;
use crate::transform::body::BoxError;

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
