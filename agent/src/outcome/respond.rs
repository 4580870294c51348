//! Responses the agent writes itself (iron-proxy's bodies and headers).

use http::{HeaderValue, StatusCode, header};

use crate::message::{ProxyResponse, body};
use crate::transform::Phase;

/// Default transform rejection: 403, `Content-Type: text/plain`, empty body.
pub fn forbidden() -> ProxyResponse {
    let mut r = http::Response::new(body::empty());
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// A plain-text error like Go's `http.Error`.
pub fn text(status: StatusCode, msg: &'static str) -> ProxyResponse {
    let mut r = http::Response::new(body::full(msg));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(msg.len()));
    r
}

pub fn bad_gateway() -> ProxyResponse {
    text(StatusCode::BAD_GATEWAY, "bad gateway\n")
}

pub fn too_large(phase: Phase) -> ProxyResponse {
    let msg = match phase {
        Phase::Response => "response body too large\n",
        Phase::Request => "request body too large\n",
    };
    text(StatusCode::PAYLOAD_TOO_LARGE, msg)
}
