//! Body integrity before signing: a signature over a body that is not exactly what the client
//! sent (and what goes upstream) is worse than a clean refusal. The same rules as `aws_auth`.

use bytes::Bytes;
use http::StatusCode;
use http_body::Body as _;

use super::reject::Reject;
use crate::transform::{ProxyRequest, RequestCx, TransformError, body};

/// The body to sign, or why the request must be refused. A body over the buffer limit is a
/// `TransformError::BodyTooLarge` (413, `rejected: body_too_large`, never forwarded truncated).
pub async fn read_for_signing(
    cx: &mut RequestCx,
    req: &mut ProxyRequest,
    allow_chunked: bool,
) -> Result<Result<Bytes, Reject>, TransformError> {
    // hyper reports the framing through the size hint: exact for `Content-Length` (and for
    // bodyless requests), unknown for chunked HTTP/1.1 or HTTP/2 DATA without a length.
    let declared = req.body().size_hint().exact();
    if declared == Some(0) {
        return Ok(Ok(Bytes::new()));
    }
    if let (Some(len), Some(limit)) = (declared, cx.request_body_limit)
        && len > limit
    {
        // Refused before a byte is read: it could only be signed truncated.
        cx.annotate("content_length", len);
        return Err(TransformError::BodyTooLarge { limit });
    }
    if declared.is_none() && !allow_chunked {
        return Ok(Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "chunked_body_not_allowed",
        )));
    }
    let bytes = match body::buffer_request(req, cx.request_body_limit).await {
        Ok(b) => b,
        Err(TransformError::Body(e)) => {
            let reject = Reject::new(StatusCode::BAD_REQUEST, "body_read_failed");
            return Ok(Err(reject.with("error", e)));
        }
        Err(e) => return Err(e),
    };
    match declared {
        // Unreachable with hyper (a short body is a read error), kept as iron-proxy's checks.
        Some(len) if bytes.is_empty() => {
            Ok(Err(
                Reject::new(StatusCode::BAD_REQUEST, "body_missing").with("content_length", len)
            ))
        }
        Some(len) if (bytes.len() as u64) < len => Ok(Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_truncated",
        )
        .with("content_length", len)
        .with("buffered_length", bytes.len()))),
        Some(_) => Ok(Ok(bytes)),
        None => {
            tracing::warn!(
                host = %cx.host,
                path = %body::decoded_path(req),
                buffered_length = bytes.len(),
                "hmac_sign signing chunked request body without length verification"
            );
            Ok(Ok(bytes))
        }
    }
}
