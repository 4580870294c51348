//! `allowlist` (§12.1): flat domains/cidrs plus method/path rules; empty denies everything.

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, validate_rules};
use crate::config::{Cidr, ConfigError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowlistConfig {
    pub domains: Vec<String>,
    pub cidrs: Vec<Cidr>,
    pub rules: Vec<RuleConfig>,
    pub warn: bool,
}

impl KindConfig for AllowlistConfig {
    /// `path` is the config block's path, e.g. `transforms[0].config`.
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        for (i, d) in self.domains.iter().enumerate() {
            if d.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.domains[{i}]"),
                    "must not be empty",
                ));
            }
        }
        validate_rules(&self.rules, &format!("{path}.rules"), errors);
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        if self.warn {
            out.push(format!(
                "{path}.warn: allowlist violations are logged but not blocked"
            ));
        }
        if self.domains.is_empty() && self.cidrs.is_empty() && self.rules.is_empty() {
            out.push(format!("{path}: empty allowlist denies every request"));
        }
    }
}
