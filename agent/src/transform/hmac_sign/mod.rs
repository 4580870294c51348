//! `hmac_sign`: signs matching requests with an HMAC over a templated message and injects the
//! signature (plus any auxiliary credentials) through templated headers.
//!
//! Data path per matching request: body integrity ([`integrity`]) → every credential read
//! from its cache → timestamp → message rendered → key decoded → HMAC ([`sign`]) → headers
//! rendered and set with their configured casing. Each failure is a JSON reject with a
//! documented reason; annotations name credentials and headers, never their values.

mod integrity;
pub mod sign;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::config::transforms::hmac_sign::{
    HmacAlgorithm, HmacSignConfig, KeyEncoding, OutputEncoding, TimestampFormat,
};
use crate::policy::RuleSet;
use crate::proxy::header_case::ConfiguredCasing;
use crate::secrets::{Secret, SecretRegistry, SecretValue};
use crate::template::Template;
use crate::transform::{
    ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict,
};

/// The credential holding the HMAC key.
const KEY_CREDENTIAL: &str = "secret";

/// Fields `signature.message` may read (`Credentials.*` = any configured credential).
const MESSAGE_FIELDS: [&str; 8] = [
    "Timestamp",
    "Method",
    "Path",
    "PathWithQuery",
    "Query",
    "Host",
    "Body",
    "Credentials.*",
];
/// Fields `headers[].value` may read.
const HEADER_FIELDS: [&str; 3] = ["Timestamp", "Signature", "Credentials.*"];

#[derive(Debug, thiserror::Error)]
pub enum HmacSignBuildError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> HmacSignBuildError {
    HmacSignBuildError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub struct HmacSign {
    rules: RuleSet,
    /// Config name → cached source, in name order (deterministic failure reports).
    credentials: Vec<(String, Arc<Secret>)>,
    timestamp: TimestampFormat,
    algorithm: HmacAlgorithm,
    key_encoding: KeyEncoding,
    output_encoding: OutputEncoding,
    message: Template,
    headers: Vec<HeaderSpec>,
    allow_chunked_body: bool,
}

struct HeaderSpec {
    /// Exactly as written in config: the wire casing and the annotation label.
    configured: String,
    name: HeaderName,
    value: Template,
}

/// A refusal: status plus the documented reason (JSON body, `rejected` annotation).
pub(crate) struct Reject {
    status: StatusCode,
    reason: &'static str,
}

impl Reject {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }

    fn into_verdict(self, cx: &mut RequestCx) -> Verdict {
        cx.annotate("rejected", self.reason);
        Verdict::Reject(Some(reject_response(self.status, self.reason)))
    }
}

/// iron-proxy's reject body: `{"error":"hmac_sign","reason":"<reason>"}`.
fn reject_response(status: StatusCode, reason: &str) -> ProxyResponse {
    let body = serde_json::json!({"error": "hmac_sign", "reason": reason}).to_string();
    let mut r = http::Response::new(crate::transform::body::full(body.clone()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

impl HmacSign {
    pub fn new(
        cfg: &HmacSignConfig,
        registry: &mut SecretRegistry,
    ) -> Result<Self, HmacSignBuildError> {
        if !cfg.credentials.contains_key(KEY_CREDENTIAL) {
            return Err(invalid(
                "credentials",
                "must include \"secret\" (the HMAC key)",
            ));
        }
        let mut credentials = Vec::new();
        for (name, src) in &cfg.credentials {
            let secret = registry
                .register(src)
                .map_err(|e| invalid(format!("credentials.{name}"), e.to_string()))?;
            credentials.push((name.clone(), secret));
        }
        let known = |n: &str| cfg.credentials.contains_key(n);
        let message = compile(
            &cfg.signature.message,
            &MESSAGE_FIELDS,
            "signature.message",
            &known,
        )?;
        if cfg.headers.is_empty() {
            return Err(invalid("headers", "at least one header is required"));
        }
        let mut headers = Vec::new();
        for (i, h) in cfg.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                invalid(
                    format!("headers[{i}].name"),
                    format!("{:?} is not a valid header name", h.name),
                )
            })?;
            let value = compile(
                &h.value,
                &HEADER_FIELDS,
                &format!("headers[{i}].value"),
                &known,
            )?;
            headers.push(HeaderSpec {
                configured: h.name.clone(),
                name,
                value,
            });
        }
        if cfg.rules.is_empty() {
            return Err(invalid("rules", "at least one rule is required"));
        }
        Ok(Self {
            rules: RuleSet::from_configs(&cfg.rules),
            credentials,
            timestamp: cfg.timestamp.format,
            algorithm: cfg.signature.algorithm,
            key_encoding: cfg.signature.key_encoding,
            output_encoding: cfg.signature.output_encoding,
            message,
            headers,
            allow_chunked_body: cfg.allow_chunked_body,
        })
    }
}

/// Compiles a template, refusing unknown fields and `.Credentials.<name>` that is not configured,
/// so a template can only fail at request time on values, never on names.
fn compile(
    src: &str,
    fields: &[&str],
    field: &str,
    known: &dyn Fn(&str) -> bool,
) -> Result<Template, HmacSignBuildError> {
    if src.is_empty() {
        return Err(invalid(field, "is required"));
    }
    let t = Template::parse(src, fields)
        .map_err(|e| invalid(field, format!("parsing template: {e}")))?;
    for r in t.field_refs() {
        if let Some(name) = r.strip_prefix("Credentials.")
            && !known(name)
        {
            return Err(invalid(
                field,
                format!("references .Credentials.{name}, which is not in credentials"),
            ));
        }
    }
    Ok(t)
}

/// Request fields the message template reads.
struct MessageData {
    timestamp: String,
    method: String,
    path: String,
    query: String,
    host: String,
    body: Bytes,
}

impl MessageData {
    fn of(req: &ProxyRequest, timestamp: String, body: Bytes) -> Self {
        // The path and query exactly as they go on the wire: that is what the upstream
        // recomputes the signature over.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_default();
        Self {
            timestamp,
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
            host: strip_port(host).to_string(),
            body,
        }
    }

    fn path_with_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// Go's `hostmatch.StripPort`: `host:port` → `host`, `[::1]:443` → `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn credential<'a>(creds: &'a [(String, SecretValue)], path: &[String]) -> Option<&'a str> {
    match path {
        [c, name] if c == "Credentials" => creds
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.expose()),
        _ => None,
    }
}

#[async_trait]
impl Transform for HmacSign {
    fn name(&self) -> &str {
        "hmac_sign"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        if !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        let body = match integrity::read_for_signing(cx, req, self.allow_chunked_body).await? {
            Ok(b) => b,
            Err(reject) => return Ok(reject.into_verdict(cx)),
        };

        let mut creds: Vec<(String, SecretValue)> = Vec::with_capacity(self.credentials.len());
        for (name, secret) in &self.credentials {
            match secret.current() {
                Ok(v) => creds.push((name.clone(), v)),
                Err(e) => {
                    // The error names the source (env var, secret id), never a value.
                    cx.annotate("credential", name.as_str());
                    cx.annotate("error", e.to_string());
                    return Ok(
                        Reject::new(StatusCode::BAD_GATEWAY, "credential_unavailable")
                            .into_verdict(cx),
                    );
                }
            }
        }

        let timestamp = sign::timestamp(self.timestamp, time::OffsetDateTime::now_utc());
        let data = MessageData::of(req, timestamp, body);
        let path_with_query = data.path_with_query();
        let rendered = self.message.render_bytes(&|p: &[String]| {
            let text = |s: &str| Some(Cow::Owned(s.as_bytes().to_vec()));
            match p {
                [f] => match f.as_str() {
                    "Timestamp" => text(&data.timestamp),
                    "Method" => text(&data.method),
                    "Path" => text(&data.path),
                    "PathWithQuery" => text(&path_with_query),
                    "Query" => text(&data.query),
                    "Host" => text(&data.host),
                    "Body" => Some(Cow::Borrowed(&data.body[..])),
                    _ => None,
                },
                _ => credential(&creds, p).and_then(text),
            }
        });
        let message = match rendered {
            Ok(m) => m,
            Err(e) => {
                cx.annotate("error", e.to_string());
                return Ok(Reject::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "message_template_failed",
                )
                .into_verdict(cx));
            }
        };

        let key_text =
            credential(&creds, &["Credentials".into(), KEY_CREDENTIAL.into()]).unwrap_or_default();
        let key = match sign::decode_key(self.key_encoding, key_text) {
            Ok(k) => k,
            Err(e) => {
                cx.annotate("error", e.to_string());
                return Ok(
                    Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "key_decode_failed")
                        .into_verdict(cx),
                );
            }
        };
        let signature = sign::sign(self.algorithm, self.output_encoding, &key, &message);

        let mut values = Vec::with_capacity(self.headers.len());
        for h in &self.headers {
            let rendered = h.value.render(&|p: &[String]| match p {
                [f] if f == "Timestamp" => Some(data.timestamp.clone()),
                [f] if f == "Signature" => Some(signature.clone()),
                _ => credential(&creds, p).map(str::to_string),
            });
            // Neither error quotes the rendered value: it may hold a credential.
            let value = rendered.map_err(|e| e.to_string()).and_then(|v| {
                HeaderValue::from_str(&v)
                    .map_err(|_| "rendered value is not a valid header value".to_string())
            });
            match value {
                Ok(v) => values.push(v),
                Err(e) => {
                    cx.annotate("header", h.configured.as_str());
                    cx.annotate("error", e);
                    return Ok(Reject::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "header_template_failed",
                    )
                    .into_verdict(cx));
                }
            }
        }

        let mut injected = Vec::with_capacity(self.headers.len());
        for (h, mut v) in self.headers.iter().zip(values) {
            v.set_sensitive(true);
            req.headers_mut().remove(&h.name);
            req.headers_mut().insert(h.name.clone(), v);
            ConfiguredCasing::insert(req, &h.configured);
            injected.push(Value::from(format!("header:{}", h.configured)));
        }
        cx.annotate("injected", injected);
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_like_go() {
        assert_eq!(strip_port("api.example.com:8443"), "api.example.com");
        assert_eq!(strip_port("API.example.com"), "API.example.com");
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }
}
