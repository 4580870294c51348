//! `header_allowlist` (§12.2): strips request headers not listed; empty `rules` = every request.

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, validate_header_patterns, validate_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderAllowlistConfig {
    /// Literal names (case-insensitive) or `/regex/` patterns.
    pub headers: Vec<String>,
    pub rules: Vec<RuleConfig>,
}

impl KindConfig for HeaderAllowlistConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.headers.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.headers"),
                "at least one header is required",
            ));
        }
        validate_header_patterns(&self.headers, &format!("{path}.headers"), "headers", errors);
        validate_rules(&self.rules, &format!("{path}.rules"), errors);
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        if self.rules.is_empty() {
            out.push(format!(
                "{path}.rules: empty, so unlisted headers are stripped from every request"
            ));
        }
    }
}
