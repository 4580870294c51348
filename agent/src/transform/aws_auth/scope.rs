//! The inbound SigV4 credential scope (`AK/DATE/REGION/SERVICE/aws4_request`), read from the
//! `Authorization` header or, for pre-signed URLs, the `X-Amz-Credential` query parameter.
//! Only the region and service are used; the placeholder key and signature are discarded.

use http::HeaderMap;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The query parameters of a pre-signed URL. They are dropped before re-signing: the request
/// leaves signed in headers, and AWS refuses a request authenticated both ways.
const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub region: String,
    pub service: String,
    /// Whether the scope came from a pre-signed URL's query.
    pub presigned: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "request has no SigV4 signature (no Authorization header or X-Amz-Credential query param)"
    )]
    Missing,
    #[error("not an {ALGORITHM} Authorization header")]
    NotSigV4,
    #[error("missing Credential field in Authorization header")]
    NoCredential,
    #[error("malformed credential scope: expected 5 segments, got {0}")]
    Segments(usize),
    #[error("malformed credential scope: expected aws4_request terminator")]
    Terminator,
    #[error("malformed credential scope: empty region or service")]
    Empty,
}

/// The scope of an inbound request. An `Authorization` header wins over the query.
pub fn parse(headers: &HeaderMap, query: Option<&str>) -> Result<Scope, ScopeError> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        let auth = auth.to_str().map_err(|_| ScopeError::NotSigV4)?;
        if !auth.is_empty() {
            return from_authorization(auth);
        }
    }
    let cred = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, v)| k == "X-Amz-Credential" && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    });
    match cred {
        Some(c) => credential_path(&c, true),
        None => Err(ScopeError::Missing),
    }
}

fn from_authorization(auth: &str) -> Result<Scope, ScopeError> {
    let rest = auth
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(ScopeError::NotSigV4)?;
    rest.split(',')
        .find_map(|part| part.trim().strip_prefix("Credential="))
        .ok_or(ScopeError::NoCredential)
        .and_then(|c| credential_path(c, false))
}

fn credential_path(cred: &str, presigned: bool) -> Result<Scope, ScopeError> {
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 5 {
        return Err(ScopeError::Segments(parts.len()));
    }
    if parts[4] != "aws4_request" {
        return Err(ScopeError::Terminator);
    }
    if parts[2].is_empty() || parts[3].is_empty() {
        return Err(ScopeError::Empty);
    }
    Ok(Scope {
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        presigned,
    })
}

/// The raw query without the pre-signing parameters; every other pair is kept byte for byte
/// (re-encoding could change what the upstream sees). `None` = nothing left.
pub fn strip_presign_params(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            !pair.is_empty() && !PRESIGN_PARAMS.contains(&key.as_ref())
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn header_scope() {
        let s = parse(
            &auth("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"),
            None,
        )
        .unwrap();
        assert_eq!((s.region.as_str(), s.service.as_str()), ("eu-west-1", "s3"));
        assert!(!s.presigned);
    }

    #[test]
    fn query_scope() {
        let q = "list-type=2&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fbedrock%2Faws4_request&X-Amz-Signature=ab";
        let s = parse(&HeaderMap::new(), Some(q)).unwrap();
        assert_eq!(
            (s.region.as_str(), s.service.as_str()),
            ("us-east-1", "bedrock")
        );
        assert!(s.presigned);
        assert_eq!(strip_presign_params(q).as_deref(), Some("list-type=2"));
        assert_eq!(strip_presign_params("X-Amz-Signature=1"), None);
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("Bearer abc", ScopeError::NotSigV4),
            (
                "AWS4-HMAC-SHA256 SignedHeaders=host",
                ScopeError::NoCredential,
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3",
                ScopeError::Segments(4),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws5",
                ScopeError::Terminator,
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AK/20260101//s3/aws4_request",
                ScopeError::Empty,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(parse(&auth(h), None).unwrap_err(), want, "{h}");
        }
        assert_eq!(
            parse(&HeaderMap::new(), Some("a=b")).unwrap_err(),
            ScopeError::Missing
        );
    }
}
