//! Re-signing with `aws-sigv4`: strip the placeholder signature, sign exactly the headers that
//! will leave the agent, and set the new `Authorization`, `X-Amz-Date`, `X-Amz-Content-Sha256`
//! (and `X-Amz-Security-Token`) headers.

use std::borrow::Cow;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningError,
    SigningSettings, UriPathNormalizationMode, sign,
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
    Target(#[source] http::Error),
    #[error("{0}")]
    Params(#[source] v4::signing_params::BuildError),
    #[error("{0}")]
    Signer(#[source] SigningError),
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
        parts.path_and_query = Some(
            pq.parse()
                .map_err(|e| SignError::Target(http::Error::from(e)))?,
        );
        *req.uri_mut() = http::Uri::from_parts(parts).map_err(|e| SignError::Target(e.into()))?;
    }
    let has_token = creds.session_token().is_some();
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(now)
        .settings(settings(scope))
        .build()
        .map_err(SignError::Params)?
        .into();
    let body = match payload {
        Payload::Bytes(b) => SignableBody::Bytes(b),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let outgoing = Outgoing::of(req)?;
    let method = req.method().as_str().to_string();
    let signable = SignableRequest::new(&method, outgoing.url.as_str(), outgoing.headers(), body)
        .map_err(SignError::Signer)?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(SignError::Signer)?
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

/// What the upstream will receive, as the signer must see it: hop-by-hop headers are removed
/// after the pipeline, so they are not signed.
struct Outgoing {
    headers: Vec<(String, String)>,
    url: String,
}

impl Outgoing {
    fn of(req: &ProxyRequest) -> Result<Self, SignError> {
        let mut outgoing = req.headers().clone();
        crate::message::hop_by_hop::strip_request(&mut outgoing);
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
        let mut headers = Vec::with_capacity(outgoing.len() + 1);
        for (name, value) in &outgoing {
            let v = value
                .to_str()
                .map_err(|_| SignError::HeaderText(name.to_string()))?;
            headers.push((name.as_str().to_string(), v.to_string()));
        }
        if !outgoing.contains_key(http::header::HOST) {
            headers.push(("host".to_string(), host.clone()));
        }
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Ok(Self {
            url: format!("https://{host}{pq}"),
            headers,
        })
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// SigV4 settings for `scope`'s service.
fn settings(scope: &Scope) -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.excluded_headers = Some(UNSIGNED_HEADERS.iter().map(|h| Cow::Borrowed(*h)).collect());
    if S3_SERVICES.contains(&scope.service.as_str()) {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    settings
}
