//! The body type the pipeline works with, and bounded buffering for transforms that must read
//! a body. Bodies stream untouched unless a transform asks for them here.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

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

/// A complete answer from the agent itself (stub, refusal): `status`, `Content-Type` and an
/// exact `Content-Length`.
pub fn respond(
    status: http::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> ProxyResponse {
    let body = body.into();
    let mut r = http::Response::new(full(body.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    r
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

async fn collect(mut body: ProxyBody, limit: Option<u64>) -> Result<Bytes, TransformError> {
    // Reads frame by frame so the limit is enforced before an oversized body is held in memory.
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| TransformError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if let Some(limit) = limit
                && (buf.len() + data.len()) as u64 > limit
            {
                return Err(TransformError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
