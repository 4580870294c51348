//! The sync call: `POST {url}/api/v1/proxy/sync` with the proxy token and the last applied
//! `config_hash`, through the agent's own HTTP client (resolver, upstream proxies, upstream
//! TLS roots). Errors classify what the poller does next; none carries the token.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value};

use crate::mint::{MintError, TokenHttp};
use crate::secrets::SecretValue;

/// Path of the sync endpoint below the control plane's base URL.
pub const SYNC_PATH: &str = "/api/v1/proxy/sync";

/// The code a control plane sends for a deleted (revoked) proxy.
pub const REVOKED: &str = "proxy_revoked";

/// Why a sync call did not produce an answer to apply.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No HTTP answer: connect, TLS, timeout.
    #[error("control plane unreachable: {0}")]
    Transport(String),
    /// A non-200 answer: `code` from `{"error":{"code","message"}}`, else `http_<status>`.
    #[error("control plane: {code}: {message} (HTTP {status})")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// A 200 whose body is not a JSON object.
    #[error("control plane answered with an invalid body: {0}")]
    Body(String),
}

impl SyncError {
    /// The proxy was deleted on the control plane: stop serving.
    pub fn revoked(&self) -> bool {
        matches!(self, SyncError::Status { code, .. } if code == REVOKED)
    }
}

/// A 200 answer, every field optional; JSON `null` counts as absent.
#[derive(Debug, Default, Clone)]
pub struct SyncAnswer {
    pub config_hash: Option<String>,
    pub status: Option<String>,
    pub principal_id: Option<String>,
    pub rules: Option<Value>,
    pub secrets: Option<Value>,
    pub transforms: Option<Value>,
    pub mcp: Option<Value>,
    pub postgres: Option<Value>,
    /// Turns on audit export to the control plane (iron-proxy §17); `Debug` shows `[redacted]`.
    pub ingest_token: Option<SecretValue>,
    /// The proxy's tags, put into every audit record and the OTEL resource.
    pub tags: Option<Vec<String>>,
}

impl SyncAnswer {
    /// Whether the answer carries any config (a hash-only answer means "unchanged").
    pub fn has_config(&self) -> bool {
        self.rules.is_some()
            || self.secrets.is_some()
            || self.transforms.is_some()
            || self.mcp.is_some()
            || self.postgres.is_some()
    }

    /// Whether it carries the pipeline (rules, secrets or transforms).
    pub fn has_pipeline(&self) -> bool {
        self.rules.is_some() || self.secrets.is_some() || self.transforms.is_some()
    }

    pub fn parse(body: &[u8]) -> Result<Self, SyncError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| SyncError::Body(format!("not JSON: {e}")))?;
        let Value::Object(mut m) = v else {
            return Err(SyncError::Body("not a JSON object".into()));
        };
        let mut take = |k: &str| m.remove(k).filter(|v| !v.is_null());
        let string = |v: Option<Value>, k: &str| -> Result<Option<String>, SyncError> {
            match v {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(SyncError::Body(format!("{k}: expected a string"))),
            }
        };
        let tags = match take("tags") {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|t| match t {
                        Value::String(s) => Ok(s),
                        _ => Err(SyncError::Body("tags: expected a list of strings".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(SyncError::Body("tags: expected a list of strings".into())),
        };
        Ok(Self {
            ingest_token: string(take("ingest_token"), "ingest_token")?
                .filter(|t| !t.is_empty())
                .map(SecretValue::new),
            tags,
            config_hash: string(take("config_hash"), "config_hash")?,
            status: string(take("status"), "status")?,
            principal_id: string(take("principal_id"), "principal_id")?,
            rules: take("rules"),
            secrets: take("secrets"),
            transforms: take("transforms"),
            mcp: take("mcp"),
            postgres: take("postgres"),
        })
    }
}

/// The control plane's sync endpoint and this proxy's token.
pub struct SyncClient {
    http: Arc<TokenHttp>,
    endpoint: String,
    /// `Bearer <token>`.
    bearer: SecretValue,
}

impl SyncClient {
    pub fn new(http: Arc<TokenHttp>, base_url: &str, token: SecretValue) -> Self {
        Self {
            http,
            endpoint: format!("{}{SYNC_PATH}", base_url.trim_end_matches('/')),
            bearer: SecretValue::new(format!("Bearer {}", token.expose())),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One sync call (no retries: the poller owns the schedule).
    pub async fn sync(&self, held_hash: &str) -> Result<SyncAnswer, SyncError> {
        let body = serde_json::json!({ "config_hash": held_hash }).to_string();
        let (status, _ctype, body) = self
            .http
            .post_json(
                &self.endpoint,
                Bytes::from(body),
                &[("authorization", self.bearer.clone())],
            )
            .await
            .map_err(|e| match e {
                MintError::Transport { reason, .. } => SyncError::Transport(reason),
                other => SyncError::Transport(other.to_string()),
            })?;
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        SyncAnswer::parse(&body)
    }
}

/// `{"error":{"code","message"}}` when the body has it; iron-control omits `code`.
fn status_error(status: StatusCode, body: &[u8]) -> SyncError {
    let e = ErrorEnvelope::parse(status, body);
    SyncError::Status {
        status: e.status,
        code: e.code,
        message: e.message,
    }
}

/// The control plane's error answer `{"error":{"code","message"}}`, each field clamped to 300
/// characters; an answer without it is named after its HTTP status.
pub struct ErrorEnvelope {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ErrorEnvelope {
    pub fn parse(status: StatusCode, body: &[u8]) -> Self {
        let err = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").cloned());
        let field = |k: &str| {
            err.as_ref()
                .and_then(|e| e.get(k))
                .and_then(Value::as_str)
                .map(|s| s.chars().take(300).collect::<String>())
        };
        ErrorEnvelope {
            status: status.as_u16(),
            code: field("code").unwrap_or_else(|| format!("http_{}", status.as_u16())),
            message: field("message").unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_string()
            }),
        }
    }
}

/// Removes `null` elements from a JSON array (iron-proxy skips them).
pub fn non_null(items: &[Value]) -> Vec<Value> {
    items.iter().filter(|v| !v.is_null()).cloned().collect()
}

/// An object from pairs, for building documents.
pub fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_body_or_the_status() {
        let e = status_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":"proxy_revoked","message":"deleted"}}"#,
        );
        assert!(e.revoked());
        assert_eq!(
            e.to_string(),
            "control plane: proxy_revoked: deleted (HTTP 401)"
        );
        let e = status_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"message":"invalid or missing proxy token"}}"#,
        );
        assert!(!e.revoked());
        assert_eq!(
            e.to_string(),
            "control plane: http_401: invalid or missing proxy token (HTTP 401)"
        );
        let e = status_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(
            e.to_string(),
            "control plane: http_502: Bad Gateway (HTTP 502)"
        );
    }

    #[test]
    fn nulls_are_absent() {
        let a =
            SyncAnswer::parse(br#"{"config_hash":"sha256:1","rules":null,"secrets":[]}"#).unwrap();
        assert_eq!(a.config_hash.as_deref(), Some("sha256:1"));
        assert!(a.rules.is_none());
        assert!(a.has_pipeline());
        let hash_only = SyncAnswer::parse(br#"{"config_hash":"sha256:1"}"#).unwrap();
        assert!(!hash_only.has_config());
        assert!(SyncAnswer::parse(b"[]").is_err());
        assert!(SyncAnswer::parse(br#"{"config_hash":5}"#).is_err());
    }

    #[test]
    fn ingest_token_and_tags() {
        let a = SyncAnswer::parse(
            br#"{"config_hash":"h","ingest_token":"iing_secret","tags":["env:prod","svc:a"]}"#,
        )
        .unwrap();
        assert_eq!(
            a.ingest_token.as_ref().map(|t| t.expose()),
            Some("iing_secret")
        );
        assert_eq!(
            a.tags.as_deref(),
            Some(&["env:prod".to_string(), "svc:a".to_string()][..])
        );
        assert!(!format!("{a:?}").contains("iing_secret"));
        assert!(!a.has_config());
        assert!(SyncAnswer::parse(br#"{"tags":"env:prod"}"#).is_err());
        assert!(SyncAnswer::parse(br#"{"tags":[1]}"#).is_err());
        assert!(
            SyncAnswer::parse(br#"{"ingest_token":""}"#)
                .unwrap()
                .ingest_token
                .is_none()
        );
    }
}
