//! Between the agent's HTTP messages and the TransformService's `HttpRequest` /
//! `HttpResponse`: snapshots sent to the service, and the service's answers (modified requests
//! and responses, reject responses) applied back. Header names go out in Go's canonical form
//! (`Content-Type`), as iron-proxy's `http.Header` sends them; transform servers written for
//! iron-proxy look them up that way.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use percent_encoding::percent_decode_str;

use super::proto::{HeaderValues, HttpRequest, HttpResponse, TunnelInfo, TunnelRequestTransform};
use crate::audit::record::TunnelAudit;
use crate::transform::body::{DecodedPath, full, replace_request_body};
use crate::transform::headers::canonical_name;
use crate::transform::{ProxyRequest, ProxyResponse, RequestCx, TransformError};

/// The request as the service sees it. `body` only when `send_request_body`.
pub fn request(cx: &RequestCx, req: &ProxyRequest, body: Option<Bytes>) -> HttpRequest {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| cx.host.to_string());
    HttpRequest {
        method: req.method().as_str().to_string(),
        url: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        // Go moves Host out of the header map into `r.Host`.
        headers: to_proto(req.headers(), Some(&HOST)),
        body: body.map(|b| b.to_vec()).unwrap_or_default(),
        host,
        remote_addr: cx.client.0.to_string(),
    }
}

/// The response as the service sees it. `body` only when `send_response_body`.
pub fn response(resp: &ProxyResponse, body: Option<Bytes>) -> HttpResponse {
    HttpResponse {
        status_code: i32::from(resp.status().as_u16()),
        headers: to_proto(resp.headers(), None),
        body: body.map(|b| b.to_vec()).unwrap_or_default(),
    }
}

fn to_proto(headers: &HeaderMap, skip: Option<&HeaderName>) -> HashMap<String, HeaderValues> {
    let mut out: HashMap<String, HeaderValues> = HashMap::new();
    for (name, value) in headers {
        if skip == Some(name) {
            continue;
        }
        out.entry(canonical_name(name.as_str()))
            .or_default()
            .values
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

fn from_proto(
    headers: &HashMap<String, HeaderValues>,
    what: &'static str,
) -> Result<HeaderMap, TransformError> {
    let mut out = HeaderMap::new();
    for (name, values) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| TransformError::HeaderName(name.clone()))?;
        for v in &values.values {
            let v = HeaderValue::from_str(v).map_err(|_| TransformError::Invalid(what))?;
            out.append(name.clone(), v);
        }
    }
    Ok(out)
}

/// CONTINUE with `modified_request`: a non-empty method, url (path and query only: the
/// destination never changes), header set (replaces all) or body (replaces it) is applied.
/// `host` is ignored: the upstream Host is the one policy allowed.
pub fn apply_request(req: &mut ProxyRequest, m: HttpRequest) -> Result<(), TransformError> {
    if !m.method.is_empty() {
        *req.method_mut() = Method::from_bytes(m.method.as_bytes()).map_err(|_| {
            TransformError::Invalid("modified_request.method is not a valid method")
        })?;
    }
    if !m.url.is_empty() {
        set_target(req, &m.url)?;
    }
    if !m.headers.is_empty() {
        let mut headers = from_proto(&m.headers, "modified_request header value is invalid")?;
        keep_framing(req.headers(), &mut headers);
        if let Some(host) = req.headers().get(HOST) {
            headers.insert(HOST, host.clone());
        }
        *req.headers_mut() = headers;
    }
    if !m.body.is_empty() {
        replace_request_body(req, Bytes::from(m.body));
    }
    Ok(())
}

/// The service's url may be origin-form (`/p?q`) or absolute; only its path and query are used.
fn set_target(req: &mut ProxyRequest, url: &str) -> Result<(), TransformError> {
    const BAD: &str = "modified_request.url is not a valid URL";
    let uri: http::Uri = url.parse().map_err(|_| TransformError::Invalid(BAD))?;
    let pq = uri
        .path_and_query()
        .ok_or(TransformError::Invalid(BAD))?
        .clone();
    let decoded = percent_decode_str(pq.path())
        .decode_utf8_lossy()
        .into_owned();
    // The same refusal identify applies to client paths: no traversal past a path rule.
    if decoded.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(TransformError::Invalid(
            "modified_request.url has dot segments",
        ));
    }
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| TransformError::Invalid(BAD))?;
    req.extensions_mut().insert(DecodedPath(decoded));
    Ok(())
}

/// A replaced header set keeps the message's real framing: the body did not change with it.
fn keep_framing(old: &HeaderMap, new: &mut HeaderMap) {
    for name in [CONTENT_LENGTH, TRANSFER_ENCODING] {
        new.remove(&name);
        for v in old.get_all(&name) {
            new.append(name.clone(), v.clone());
        }
    }
}

/// CONTINUE with `modified_response`: a non-zero status, a non-empty header set (replaces all)
/// and a non-empty body (replaces it) are applied.
pub fn apply_response(resp: &mut ProxyResponse, m: HttpResponse) -> Result<(), TransformError> {
    if m.status_code != 0 {
        *resp.status_mut() = status(m.status_code)?;
    }
    if !m.headers.is_empty() {
        let mut headers = from_proto(&m.headers, "modified_response header value is invalid")?;
        keep_framing(resp.headers(), &mut headers);
        *resp.headers_mut() = headers;
    }
    if !m.body.is_empty() {
        let len = m.body.len();
        *resp.body_mut() = full(Bytes::from(m.body));
        let h = resp.headers_mut();
        h.remove(TRANSFER_ENCODING);
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(())
}

/// REJECT: the service's response (status 0 → 403), or `None` for the pipeline's default 403.
pub fn reject(r: Option<HttpResponse>) -> Result<Option<ProxyResponse>, TransformError> {
    let Some(r) = r else { return Ok(None) };
    let code = if r.status_code == 0 {
        StatusCode::FORBIDDEN
    } else {
        status(r.status_code)?
    };
    let mut headers = from_proto(&r.headers, "reject response header value is invalid")?;
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(r.body.len()));
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    let mut resp = http::Response::new(full(Bytes::from(r.body)));
    *resp.status_mut() = code;
    *resp.headers_mut() = headers;
    Ok(Some(resp))
}

fn status(code: i32) -> Result<StatusCode, TransformError> {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(TransformError::Invalid(
            "status_code is not a valid HTTP status",
        ))
}

/// `context.tunnel` for a request inside a CONNECT/SOCKS5 tunnel: its target and the tunnel
/// setup's traces, annotations as `google.protobuf.Struct` (as iron-proxy sends them).
pub fn tunnel(t: &TunnelAudit) -> TunnelInfo {
    TunnelInfo {
        target: t.target.clone(),
        request_transforms: t
            .request_transforms
            .iter()
            .map(|tr| TunnelRequestTransform {
                name: tr.name.clone(),
                annotations: Some(to_struct(&tr.annotations)),
            })
            .collect(),
    }
}

fn to_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
