//! `judge` (§12.12): asks an LLM to allow or deny matching requests.

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, require_str, validate_required_rules};
use crate::config::{ConfigError, GoDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Instance name; becomes the transform's name in traces and `rejected_by`.
    pub name: String,
    pub prompt: String,
    pub rules: Vec<RuleConfig>,
    pub provider: Option<JudgeProviderConfig>,
    pub fallback: JudgeFallback,
    pub timeout: GoDuration,
    pub max_concurrent: u32,
    pub circuit_breaker: CircuitBreakerConfig,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            prompt: String::new(),
            rules: Vec::new(),
            provider: None,
            fallback: JudgeFallback::Deny,
            timeout: GoDuration(std::time::Duration::from_secs(8)),
            max_concurrent: 100,
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeFallback {
    #[default]
    Deny,
    Skip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    pub consecutive_failures: u32,
    pub cooldown: GoDuration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            cooldown: GoDuration(std::time::Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeProviderConfig {
    #[serde(rename = "type")]
    pub kind: Option<JudgeProviderType>,
    pub model: String,
    /// Environment variable holding the API key; must be non-empty at startup.
    pub api_key_env: String,
    pub base_url: Option<String>,
    pub max_tokens: u32,
}

impl Default for JudgeProviderConfig {
    fn default() -> Self {
        Self {
            kind: None,
            model: String::new(),
            api_key_env: String::new(),
            base_url: None,
            max_tokens: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeProviderType {
    Anthropic,
    Openai,
}

impl JudgeProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Anthropic => "https://api.anthropic.com",
            Self::Openai => "https://api.openai.com",
        }
    }
}

impl JudgeProviderConfig {
    pub fn base_url(&self) -> &str {
        match (&self.base_url, self.kind) {
            (Some(u), _) if !u.is_empty() => u,
            (_, Some(k)) => k.default_base_url(),
            _ => "",
        }
    }
}

impl KindConfig for JudgeConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        require_str(Some(&self.name), &format!("{path}.name"), errors);
        require_str(Some(&self.prompt), &format!("{path}.prompt"), errors);
        validate_required_rules(&self.rules, &format!("{path}.rules"), errors);
        if self.timeout.0.is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.timeout"),
                "must be positive",
            ));
        }
        if self.max_concurrent == 0 {
            errors.push(ConfigError::new(
                format!("{path}.max_concurrent"),
                "must be positive",
            ));
        }
        if self.circuit_breaker.consecutive_failures == 0 {
            errors.push(ConfigError::new(
                format!("{path}.circuit_breaker.consecutive_failures"),
                "must be positive",
            ));
        }
        let pp = format!("{path}.provider");
        match &self.provider {
            None => errors.push(ConfigError::new(pp, "is required")),
            Some(p) => {
                if p.kind.is_none() {
                    errors.push(ConfigError::new(
                        format!("{pp}.type"),
                        "is required (anthropic or openai)",
                    ));
                }
                require_str(Some(&p.model), &format!("{pp}.model"), errors);
                require_str(Some(&p.api_key_env), &format!("{pp}.api_key_env"), errors);
                if p.max_tokens == 0 {
                    errors.push(ConfigError::new(
                        format!("{pp}.max_tokens"),
                        "must be positive",
                    ));
                }
                if let Some(u) = &p.base_url
                    && !(u.starts_with("https://") || u.starts_with("http://"))
                {
                    errors.push(ConfigError::new(
                        format!("{pp}.base_url"),
                        format!("must be an http(s) URL; got {u:?}"),
                    ));
                }
            }
        }
    }
}
