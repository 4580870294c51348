//! Body integrity before signing, shared by `aws_auth` and `hmac_sign`: a signature over a body
//! that is not exactly what the client sent (and what goes upstream) is worse than a clean
//! refusal. The body is buffered within `proxy.max_request_body_bytes` and put back with an
//! exact `Content-Length`; a body without a declared length (chunked HTTP/1.1, HTTP/2 DATA
//! without `content-length`) is refused unless the transform's `allow_chunked_body` is set.

use bytes::Bytes;
use http::{StatusCode, header};
use http_body::Body as _;
use serde_json::Value;

use crate::transform::{ProxyRequest, RequestCx, TransformError, body};

/// Why a body cannot be signed. Each transform turns it into its own refusal.
#[derive(Debug)]
pub enum BodyRefusal {
    /// Over the buffer limit: refused whole, never signed or forwarded truncated.
    TooLarge {
        limit: u64,
        content_length: Option<u64>,
    },
    /// No declared length and `allow_chunked_body` is off.
    ChunkedNotAllowed,
    /// Reading the body failed (the client went away, a malformed chunk).
    ReadFailed(TransformError),
    /// A non-zero `Content-Length` but no body.
    Missing { content_length: u64 },
    /// Fewer bytes than `Content-Length` declared.
    Truncated {
        content_length: u64,
        buffered_length: usize,
    },
}

impl BodyRefusal {
    /// The documented `rejected` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "body_too_large",
            Self::ChunkedNotAllowed => "chunked_body_not_allowed",
            Self::ReadFailed(_) => "body_read_failed",
            Self::Missing { .. } => "body_missing",
            Self::Truncated { .. } => "body_truncated",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } | Self::Truncated { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ChunkedNotAllowed | Self::ReadFailed(_) | Self::Missing { .. } => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The lengths involved, as annotations (`error` for a read failure is the caller's: the
    /// transforms word it differently).
    pub fn lengths(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::TooLarge {
                limit,
                content_length,
            } => {
                let mut v = Vec::new();
                if let Some(n) = content_length {
                    v.push(("content_length", Value::from(*n)));
                }
                v.push(("limit", Value::from(*limit)));
                v
            }
            Self::Missing { content_length } => {
                vec![("content_length", Value::from(*content_length))]
            }
            Self::Truncated {
                content_length,
                buffered_length,
            } => vec![
                ("content_length", Value::from(*content_length)),
                ("buffered_length", Value::from(*buffered_length)),
            ],
            Self::ChunkedNotAllowed | Self::ReadFailed(_) => Vec::new(),
        }
    }
}

/// The declared body length: `Content-Length`, else hyper's exact size hint (which is the
/// framing: exact for a length or a bodyless request, unknown for chunked).
fn declared_length(req: &ProxyRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| req.body().size_hint().exact())
}

/// The body to sign, buffered and put back; `transform` names the caller in the warning logged
/// when a chunked body is signed without length verification.
pub async fn read_for_signing(
    cx: &RequestCx,
    req: &mut ProxyRequest,
    allow_chunked: bool,
    transform: &str,
) -> Result<Bytes, BodyRefusal> {
    let declared = declared_length(req);
    if declared == Some(0) || (declared.is_none() && req.body().is_end_stream()) {
        return Ok(Bytes::new());
    }
    if let (Some(len), Some(limit)) = (declared, cx.request_body_limit)
        && len > limit
    {
        // Refused before a byte is read: it could only be signed truncated.
        return Err(BodyRefusal::TooLarge {
            limit,
            content_length: Some(len),
        });
    }
    if declared.is_none() && !allow_chunked {
        return Err(BodyRefusal::ChunkedNotAllowed);
    }
    let bytes = match body::buffer_request(req, cx.request_body_limit).await {
        Ok(b) => b,
        Err(TransformError::BodyTooLarge { limit }) => {
            return Err(BodyRefusal::TooLarge {
                limit,
                content_length: None,
            });
        }
        Err(e) => return Err(BodyRefusal::ReadFailed(e)),
    };
    match declared {
        // With hyper a short body is a read error; kept as iron-proxy's checks.
        Some(len) if bytes.is_empty() => Err(BodyRefusal::Missing {
            content_length: len,
        }),
        Some(len) if (bytes.len() as u64) < len => Err(BodyRefusal::Truncated {
            content_length: len,
            buffered_length: bytes.len(),
        }),
        Some(_) => Ok(bytes),
        None => {
            tracing::warn!(
                host = %cx.host,
                path = %body::decoded_path(req),
                buffered_length = bytes.len(),
                "{transform} signing chunked request body without length verification"
            );
            Ok(bytes)
        }
    }
}
