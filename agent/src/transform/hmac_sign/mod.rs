//! `hmac_sign`: signs matching requests with an HMAC over a templated message and injects the
//! signature (plus any auxiliary credentials) through templated headers.
//!
//! Data path per matching request (see [`HmacSign::on_request`]): body integrity
//! ([`signed_body`]) → every credential read from its cache → timestamp → message rendered
//! ([`message`]) → key decoded and HMAC ([`sign`]) → headers rendered and set with their
//! configured casing. Each failure is a JSON reject with a documented reason ([`JsonReject`]);
//! annotations name credentials and headers, never their values.

mod message;
pub mod sign;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use crate::config::transforms::hmac_sign::{
    HmacAlgorithm, HmacSignConfig, KeyEncoding, OutputEncoding, TimestampFormat,
};
use crate::message::header_case::ConfiguredCasing;
use crate::policy::RuleSet;
use crate::secrets::Secret;
use crate::template::Template;
use crate::transform::build::{Build, BuildContext, BuildProblem, TransformBuildError};
use crate::transform::json_reject::JsonReject;
use crate::transform::signed_body::{self, BodyRefusal};
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};
use message::{Credentials, MessageData};

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

impl Build for HmacSign {
    type Config = HmacSignConfig;

    fn build(cfg: &HmacSignConfig, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        if !cfg.credentials.contains_key(KEY_CREDENTIAL) {
            return Err(TransformBuildError::invalid(
                "credentials",
                "must include \"secret\" (the HMAC key)",
            ));
        }
        let mut credentials = Vec::new();
        for (name, src) in &cfg.credentials {
            let secret = cx
                .secrets
                .register(src)
                .map_err(|e| TransformBuildError::new(format!("credentials.{name}"), e))?;
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
            return Err(TransformBuildError::invalid(
                "headers",
                "at least one header is required",
            ));
        }
        let mut headers = Vec::new();
        for (i, h) in cfg.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                TransformBuildError::new(
                    format!("headers[{i}].name"),
                    BuildProblem::HeaderName(h.name.clone()),
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
            return Err(TransformBuildError::invalid(
                "rules",
                "at least one rule is required",
            ));
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
) -> Result<Template, TransformBuildError> {
    if src.is_empty() {
        return Err(TransformBuildError::invalid(field, "is required"));
    }
    let t = Template::parse(src, fields)
        .map_err(|e| TransformBuildError::new(field, BuildProblem::Template(e)))?;
    for r in t.field_refs() {
        if let Some(name) = r.strip_prefix("Credentials.")
            && !known(name)
        {
            return Err(TransformBuildError::new(
                field,
                BuildProblem::UnknownCredential(name.to_string()),
            ));
        }
    }
    Ok(t)
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
        let signed = match signed_body::read_for_signing(
            cx,
            req,
            self.allow_chunked_body,
            "hmac_sign",
        )
        .await
        {
            Ok(body) => self.sign(req, body),
            Err(refusal) => Err(body_reject(cx, refusal)?),
        };
        match signed {
            Ok(injected) => {
                cx.annotate("injected", injected);
                Ok(Verdict::Continue)
            }
            Err(reject) => Ok(reject.into_verdict(cx)),
        }
    }
}

fn reject(status: StatusCode, reason: &'static str) -> JsonReject {
    JsonReject::new("hmac_sign", status, reason)
}

/// A body that cannot be signed: over the limit is the pipeline's `body_too_large` (413, never
/// forwarded truncated); the rest are `hmac_sign` refusals.
fn body_reject(cx: &mut RequestCx, refusal: BodyRefusal) -> Result<JsonReject, TransformError> {
    let reject = reject(refusal.status(), refusal.reason());
    match refusal {
        BodyRefusal::TooLarge {
            limit,
            content_length,
        } => {
            if let Some(n) = content_length {
                cx.annotate("content_length", n);
            }
            Err(TransformError::BodyTooLarge { limit })
        }
        BodyRefusal::ReadFailed(TransformError::Body(e)) => Ok(reject.with("error", e.to_string())),
        BodyRefusal::ReadFailed(e) => Err(e),
        other => Ok(reject.with_all(other.lengths())),
    }
}

impl HmacSign {
    /// Signs a request whose body is buffered; returns the `injected` annotation.
    fn sign(&self, req: &mut ProxyRequest, body: Bytes) -> Result<Vec<Value>, JsonReject> {
        let creds = self.credentials()?;
        let timestamp = sign::timestamp(self.timestamp, time::OffsetDateTime::now_utc());
        let data = MessageData::of(req, timestamp, body);
        let message = self
            .message
            .render_bytes(&|p| data.lookup(&creds, p))
            .map_err(|e| {
                reject(StatusCode::INTERNAL_SERVER_ERROR, "message_template_failed")
                    .with("error", e.to_string())
            })?;
        let key_text = creds.get(KEY_CREDENTIAL).unwrap_or_default();
        let key = sign::decode_key(self.key_encoding, key_text).map_err(|e| {
            reject(StatusCode::INTERNAL_SERVER_ERROR, "key_decode_failed")
                .with("error", e.to_string())
        })?;
        let signature = sign::sign(self.algorithm, self.output_encoding, &key, &message);
        let values = self.render_headers(&data.timestamp, &signature, &creds)?;
        Ok(self.set_headers(req, values))
    }

    /// Every configured credential's current value, or `credential_unavailable`.
    fn credentials(&self) -> Result<Credentials, JsonReject> {
        let mut out = Vec::with_capacity(self.credentials.len());
        for (name, secret) in &self.credentials {
            // The error names the source (env var, secret id), never a value.
            let value = secret.current().map_err(|e| {
                reject(StatusCode::BAD_GATEWAY, "credential_unavailable")
                    .with("credential", name.as_str())
                    .with("error", e.to_string())
            })?;
            out.push((name.clone(), value));
        }
        Ok(Credentials(out))
    }

    /// All header values, rendered before any is set (a failure leaves the request untouched).
    fn render_headers(
        &self,
        timestamp: &str,
        signature: &str,
        creds: &Credentials,
    ) -> Result<Vec<HeaderValue>, JsonReject> {
        self.headers
            .iter()
            .map(|h| {
                let rendered = h.value.render(&|p: &[String]| match p {
                    [f] if f == "Timestamp" => Some(timestamp.to_string()),
                    [f] if f == "Signature" => Some(signature.to_string()),
                    _ => creds.field(p).map(str::to_string),
                });
                // Neither error quotes the rendered value: it may hold a credential.
                rendered
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        HeaderValue::from_str(&v)
                            .map_err(|_| "rendered value is not a valid header value".to_string())
                    })
                    .map_err(|e| {
                        reject(StatusCode::INTERNAL_SERVER_ERROR, "header_template_failed")
                            .with("header", h.configured.as_str())
                            .with("error", e)
                    })
            })
            .collect()
    }

    /// Sets the headers in declaration order, replacing the workload's values in any casing.
    fn set_headers(&self, req: &mut ProxyRequest, values: Vec<HeaderValue>) -> Vec<Value> {
        let mut injected = Vec::with_capacity(values.len());
        for (h, mut v) in self.headers.iter().zip(values) {
            v.set_sensitive(true);
            req.headers_mut().remove(&h.name);
            req.headers_mut().insert(h.name.clone(), v);
            ConfiguredCasing::insert(req, &h.configured);
            injected.push(Value::from(format!("header:{}", h.configured)));
        }
        injected
    }
}
