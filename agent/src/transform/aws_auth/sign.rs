//! Re-signing with `aws-sigv4`: strip the placeholder signature, sign exactly the headers that
//! will leave the agent, and set the new `Authorization`, `X-Amz-Date`, `X-Amz-Content-Sha256`
//! (and `X-Amz-Security-Token`) headers.

use std::borrow::Cow;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use http::{HeaderName, HeaderValue};

use super::scope::{self, Scope};
use crate::transform::ProxyRequest;

/// The placeholder signature headers; the signer sets fresh ones.
const PLACEHOLDER_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Headers never signed: rewritten in transit or irrelevant to AWS (botocore's and the SDKs'
/// lists). Hop-by-hop headers are left out separately since the proxy drops them.
const UNSIGNED_HEADERS: [&str; 5] = [
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
    "expect",
];

/// S3 signs the path as sent: single percent-encoding and no dot-segment normalisation.
const S3_SERVICES: [&str; 3] = ["s3", "s3-object-lambda", "s3-outposts"];

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("request has no host to sign")]
    NoHost,
    #[error("header {0} is not valid text")]
    HeaderText(String),
    #[error("rewriting the request target: {0}")]
    Target(String),
    #[error("{0}")]
    Signer(String),
}

pub enum Payload<'a> {
    Bytes(&'a [u8]),
    Unsigned,
}

/// Names the headers the signer set, for the `injected` annotation.
pub fn resign(
    req: &mut ProxyRequest,
    scope: &Scope,
    creds: Credentials,
    payload: Payload<'_>,
    now: SystemTime,
) -> Result<Vec<&'static str>, SignError> {
    for h in PLACEHOLDER_HEADERS {
        req.headers_mut().remove(h);
    }
    if let Some(q) = req.uri().query().filter(|_| scope.presigned) {
        let path = req.uri().path();
        let pq = match scope::strip_presign_params(q) {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq.parse().map_err(|e| SignError::Target(format!("{e}")))?);
        *req.uri_mut() =
            http::Uri::from_parts(parts).map_err(|e| SignError::Target(e.to_string()))?;
    }

    // Sign what the upstream will receive: hop-by-hop headers are removed after the pipeline.
    let mut outgoing = req.headers().clone();
    crate::proxy::headers::strip_request(&mut outgoing);
    let host = match outgoing.get(http::header::HOST) {
        Some(h) => h
            .to_str()
            .map_err(|_| SignError::HeaderText("host".into()))?
            .to_string(),
        None => req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .ok_or(SignError::NoHost)?,
    };
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(outgoing.len() + 1);
    for (name, value) in &outgoing {
        let v = value
            .to_str()
            .map_err(|_| SignError::HeaderText(name.to_string()))?;
        headers.push((name.as_str(), v));
    }
    if !outgoing.contains_key(http::header::HOST) {
        headers.push(("host", &host));
    }
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("https://{host}{pq}");

    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.excluded_headers = Some(UNSIGNED_HEADERS.iter().map(|h| Cow::Borrowed(*h)).collect());
    if S3_SERVICES.contains(&scope.service.as_str()) {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let has_token = creds.session_token().is_some();
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into();
    let body = match payload {
        Payload::Bytes(b) => SignableBody::Bytes(b),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let method = req.method().as_str().to_string();
    let signable = SignableRequest::new(&method, url.as_str(), headers.into_iter(), body)
        .map_err(|e| SignError::Signer(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into_parts();
    let (new_headers, _) = instructions.into_parts();
    for h in new_headers {
        let mut value = HeaderValue::from_str(h.value())
            .map_err(|_| SignError::HeaderText(h.name().to_string()))?;
        value.set_sensitive(h.sensitive());
        let name = HeaderName::from_bytes(h.name().as_bytes())
            .map_err(|_| SignError::HeaderText(h.name().to_string()))?;
        req.headers_mut().insert(name, value);
    }
    let mut injected = vec![
        "header:Authorization",
        "header:X-Amz-Date",
        "header:X-Amz-Content-Sha256",
    ];
    if has_token {
        injected.push("header:X-Amz-Security-Token");
    }
    Ok(injected)
}
