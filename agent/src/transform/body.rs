//! Bounded body buffering for transforms that must read a body (bodies stream untouched unless
//! a transform asks for them here), plus the message body helpers transforms use.

use bytes::Bytes;
use http_body_util::BodyExt;

use super::TransformError;

pub use crate::message::body::{
    BoxError, DecodedPath, ProxyBody, ProxyRequest, ProxyResponse, decoded_path, empty, full,
    respond,
};

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
        let frame = frame.map_err(TransformError::Body)?;
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
