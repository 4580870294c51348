//! The two LLM backends: Anthropic Messages and OpenAI Chat Completions, called through the
//! agent's own HTTP client ([`TokenHttp`]: its resolver, upstream proxies and TLS roots, without
//! `upstream_deny_cidrs`, like iron-proxy's judge transport).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::transforms::{JudgeProviderConfig, JudgeProviderType};
use crate::mint::{MintError, TokenHttp};
use crate::secrets::{Secret, SecretValue};

/// Bytes of an error body quoted in the failure reason.
const MAX_ERROR_BODY: usize = 512;

pub struct Provider {
    kind: JudgeProviderType,
    endpoint: String,
    model: String,
    max_tokens: u32,
    key: Arc<Secret>,
    http: Arc<TokenHttp>,
}

/// The model's text and the tokens the provider billed.
#[derive(Debug)]
pub struct Reply {
    pub text: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// Why a call produced no answer; the text becomes `judge.reason` (never a key).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("api key unavailable from {0}")]
    Key(String),
    #[error("adapter error: {provider} request failed: {reason}")]
    Transport {
        provider: &'static str,
        reason: String,
    },
    #[error("adapter error: {provider} returned {status}: {body}")]
    Status {
        provider: &'static str,
        status: u16,
        body: String,
    },
    #[error("adapter error: {provider} response: {reason}")]
    Response {
        provider: &'static str,
        reason: String,
    },
}

impl Provider {
    /// `cfg` was validated: `kind` is set.
    pub fn new(
        cfg: &JudgeProviderConfig,
        kind: JudgeProviderType,
        key: Arc<Secret>,
        http: Arc<TokenHttp>,
    ) -> Self {
        let base = cfg.base_url().trim_end_matches('/');
        let path = match kind {
            JudgeProviderType::Anthropic => "/v1/messages",
            JudgeProviderType::Openai => "/v1/chat/completions",
        };
        Self {
            kind,
            endpoint: format!("{base}{path}"),
            model: cfg.model.clone(),
            max_tokens: cfg.max_tokens,
            key,
            http,
        }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The request body for `system` and the user message `user` (the envelope).
    pub fn body(&self, system: &str, user: &str) -> Value {
        match self.kind {
            JudgeProviderType::Anthropic => json!({
                "model": self.model,
                "max_tokens": self.max_tokens,
                "system": system,
                "messages": [{"role": "user", "content": user}],
            }),
            JudgeProviderType::Openai => json!({
                "model": self.model,
                "max_completion_tokens": self.max_tokens,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
            }),
        }
    }

    pub async fn call(&self, system: &str, user: &str) -> Result<Reply, CallError> {
        let provider = self.kind.as_str();
        let key = self
            .key
            .current()
            .map_err(|_| CallError::Key(self.key.display_name().to_string()))?;
        let headers: Vec<(&'static str, SecretValue)> = match self.kind {
            JudgeProviderType::Anthropic => vec![
                ("x-api-key", key),
                ("anthropic-version", SecretValue::new("2023-06-01")),
            ],
            JudgeProviderType::Openai => vec![(
                "authorization",
                SecretValue::new(format!("Bearer {}", key.expose())),
            )],
        };
        let body = Bytes::from(self.body(system, user).to_string());
        let (status, _, bytes) = self
            .http
            .post_json(&self.endpoint, body, &headers)
            .await
            .map_err(|e| CallError::Transport {
                provider,
                reason: match e {
                    MintError::Transport { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
        if !status.is_success() {
            return Err(CallError::Status {
                provider,
                status: status.as_u16(),
                body: cap(&String::from_utf8_lossy(&bytes), MAX_ERROR_BODY),
            });
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| CallError::Response {
            provider,
            reason: format!("invalid JSON: {e}"),
        })?;
        self.reply(&v).ok_or_else(|| CallError::Response {
            provider,
            reason: "no text content in the response".into(),
        })
    }

    fn reply(&self, v: &Value) -> Option<Reply> {
        let usage = |k: &str| {
            v.get("usage")
                .and_then(|u| u.get(k))
                .and_then(Value::as_u64)
        };
        match self.kind {
            JudgeProviderType::Anthropic => {
                let text: String = v
                    .get("content")?
                    .as_array()?
                    .iter()
                    .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect();
                Some(Reply {
                    text,
                    input_tokens: usage("input_tokens"),
                    output_tokens: usage("output_tokens"),
                })
            }
            JudgeProviderType::Openai => Some(Reply {
                text: v
                    .get("choices")?
                    .get(0)?
                    .get("message")?
                    .get("content")?
                    .as_str()?
                    .to_string(),
                input_tokens: usage("prompt_tokens"),
                output_tokens: usage("completion_tokens"),
            }),
        }
    }
}

/// At most `max` bytes of `s` (on a char boundary), `...` appended when cut.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
