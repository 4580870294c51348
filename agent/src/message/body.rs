//! The body type every stage works with, and complete bodies for the agent's own answers.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

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
