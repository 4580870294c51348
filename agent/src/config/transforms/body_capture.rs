//! `body_capture` (§12.6): records request bodies on the audit log; empty `rules` never captures.

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, validate_rules};
use crate::config::ConfigError;

pub const DEFAULT_BODY_CAPTURE_BYTES: u64 = 16384;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodyCaptureConfig {
    /// Zero or negative means the default (16 KiB), as iron-proxy reads it.
    pub max_request_body_bytes: i64,
    pub rules: Vec<RuleConfig>,
}

impl Default for BodyCaptureConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: DEFAULT_BODY_CAPTURE_BYTES as i64,
            rules: Vec::new(),
        }
    }
}

impl BodyCaptureConfig {
    /// The effective per-request capture cap in bytes.
    pub fn capture_limit(&self) -> u64 {
        if self.max_request_body_bytes <= 0 {
            DEFAULT_BODY_CAPTURE_BYTES
        } else {
            self.max_request_body_bytes as u64
        }
    }
}

impl KindConfig for BodyCaptureConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        validate_rules(&self.rules, &format!("{path}.rules"), errors);
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        if self.rules.is_empty() {
            out.push(format!(
                "{path}.rules: empty, so body_capture never captures anything"
            ));
        }
    }
}
