//! The body type the pipeline works with, and bounded buffering for transforms that must read
//! a body. Bodies stream untouched unless a transform asks for them here.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};

use super::TransformError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
pub type ProxyRequest = http::Request<ProxyBody>;
pub type ProxyResponse = http::Response<ProxyBody>;

pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The decoded request path, recorded by the proxy in an extension before the pipeline runs
/// (falls back to the raw path).
pub fn decoded_path(req: &ProxyRequest) -> &str {
    req.extensions()
        .get::<DecodedPath>()
        .map_or_else(|| req.uri().path(), |p| p.0.as_str())
}

/// Percent-decoded request path, set by `identify`.
#[derive(Debug, Clone)]
pub struct DecodedPath(pub String);

/// Reads the whole request body into memory (at most `limit` bytes), puts it back as a full
/// body with an exact `Content-Length`, and returns it. Over the limit → `BodyTooLarge`: the
/// caller answers 413 and nothing is forwarded truncated.
pub async fn buffer_request(
    req: &mut ProxyRequest,
    limit: Option<u64>,
) -> Result<Bytes, TransformError> {
    let body = std::mem::replace(req.body_mut(), empty());
    let bytes = collect(body, limit).await?;
    *req.body_mut() = full(bytes.clone());
    set_length(req.headers_mut(), bytes.len());
    Ok(bytes)
}

/// As [`buffer_request`], for responses.
pub async fn buffer_response(
    resp: &mut ProxyResponse,
    limit: Option<u64>,
) -> Result<Bytes, TransformError> {
    let body = std::mem::replace(resp.body_mut(), empty());
    let bytes = collect(body, limit).await?;
    *resp.body_mut() = full(bytes.clone());
    set_length(resp.headers_mut(), bytes.len());
    Ok(bytes)
}

/// Replaces a request body with new bytes and fixes the framing headers.
pub fn replace_request_body(req: &mut ProxyRequest, bytes: Bytes) {
    set_length(req.headers_mut(), bytes.len());
    *req.body_mut() = full(bytes);
}

fn set_length(headers: &mut http::HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
}

async fn collect(body: ProxyBody, limit: Option<u64>) -> Result<Bytes, TransformError> {
    match limit {
        Some(limit) => {
            let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
            match limited.collect().await {
                Ok(c) => Ok(c.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(TransformError::BodyTooLarge { limit })
                }
                Err(e) => Err(TransformError::Body(e.to_string())),
            }
        }
        None => body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| TransformError::Body(e.to_string())),
    }
}
