//! Request-target edits for transforms: query pairs and paths, re-encoded the way Go's
//! `url.Values.Encode` and `url.URL` do (keys sorted, space as `+`).

use http::Uri;
use http::uri::PathAndQuery;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::body::DecodedPath;
use super::{ProxyRequest, TransformError};

/// Characters escaped in a path segment sequence (RFC 3986 pchar plus `/`).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

/// Decoded `(key, value)` pairs of the query, in order.
pub fn query_pairs(req: &ProxyRequest) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or("");
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Replaces the query with `pairs`, sorted by key (stable), form-encoded.
pub fn set_query_pairs(
    req: &mut ProxyRequest,
    mut pairs: Vec<(String, String)>,
) -> Result<(), TransformError> {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        ser.append_pair(k, v);
    }
    let query = ser.finish();
    let path = req.uri().path().to_string();
    let pq = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    set_path_and_query(req, &pq)
}

/// Sets a new (decoded) path, percent-encoding what must be, and keeps the query.
pub fn set_path(req: &mut ProxyRequest, decoded: &str) -> Result<(), TransformError> {
    let encoded: String = utf8_percent_encode(decoded, PATH).collect();
    let pq = match req.uri().query() {
        Some(q) => format!("{encoded}?{q}"),
        None => encoded,
    };
    set_path_and_query(req, &pq)?;
    req.extensions_mut()
        .insert(DecodedPath(decoded.to_string()));
    Ok(())
}

fn set_path_and_query(req: &mut ProxyRequest, pq: &str) -> Result<(), TransformError> {
    let pq: PathAndQuery = pq
        .parse()
        .map_err(|_| TransformError::Invalid("rewritten request target is invalid"))?;
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq);
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| TransformError::Invalid("rewritten request target is invalid"))?;
    Ok(())
}
