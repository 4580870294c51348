//! `allowlist` (§12.1): flat domains/cidrs plus method/path rules; empty denies everything.
//! `mode: learn` (iron-agent extension) admits what the rules would deny and says so in the
//! audit record, to observe a job before its policy is written (`iron-agent policy suggest`).

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
    pub mode: AllowlistMode,
}

/// `allowlist.mode`: `enforce` (default) or `learn`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowlistMode {
    #[default]
    Enforce,
    /// Every request the rules would deny is allowed and forwarded; its allowlist trace is
    /// annotated `learn: would_deny`.
    Learn,
}

impl AllowlistConfig {
    pub fn learns(&self) -> bool {
        self.mode == AllowlistMode::Learn
    }
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
        if self.learns() {
            out.push(format!(
                "{path}.mode: learn: the allowlist is NOT enforced, every request is allowed and recorded"
            ));
        }
        if self.warn {
            out.push(format!(
                "{path}.warn: allowlist violations are logged but not blocked"
            ));
        }
        let empty = self.domains.is_empty() && self.cidrs.is_empty() && self.rules.is_empty();
        // In learn mode an empty list is the usual start, and denies nothing.
        if empty && !self.learns() {
            out.push(format!("{path}: empty allowlist denies every request"));
        }
    }
}
