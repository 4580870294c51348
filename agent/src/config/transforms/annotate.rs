//! `annotate` (§12.3): copies request header values into audit annotations; never rejects.

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, validate_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotateConfig {
    pub annotations: Vec<AnnotationGroup>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotationGroup {
    pub rules: Vec<RuleConfig>,
    pub headers: Vec<String>,
}

impl KindConfig for AnnotateConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.annotations.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.annotations"),
                "at least one annotation group is required",
            ));
        }
        for (i, g) in self.annotations.iter().enumerate() {
            let p = format!("{path}.annotations[{i}]");
            if g.rules.is_empty() {
                errors.push(ConfigError::new(
                    format!("{p}.rules"),
                    "at least one rule is required",
                ));
            }
            validate_rules(&g.rules, &format!("{p}.rules"), errors);
            if g.headers.is_empty() {
                errors.push(ConfigError::new(
                    format!("{p}.headers"),
                    "at least one header is required",
                ));
            }
            for (j, h) in g.headers.iter().enumerate() {
                if h.trim().is_empty() {
                    errors.push(ConfigError::new(
                        format!("{p}.headers[{j}]"),
                        "must not be empty",
                    ));
                }
            }
        }
    }
}
