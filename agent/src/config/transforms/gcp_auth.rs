//! `gcp_auth` (§12.8): mints Google access tokens; empty `rules` = every request.

use std::path::PathBuf;

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, SecretSource, validate_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpAuthConfig {
    pub keyfile_path: Option<PathBuf>,
    pub keyfile: Option<SecretSource>,
    pub credentials_provider: Option<GcpCredentialsProvider>,
    /// Domain-wide delegation subject; needs a keyfile.
    pub subject: Option<String>,
    pub scopes: Vec<String>,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpCredentialsProvider {
    #[serde(rename = "type")]
    pub kind: GcpCredentialsProviderType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GcpCredentialsProviderType {
    WorkloadIdentity,
}

impl KindConfig for GcpAuthConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let set = [
            self.keyfile_path.is_some(),
            self.keyfile.is_some(),
            self.credentials_provider.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            errors.push(ConfigError::new(
                path,
                "requires exactly one of \"keyfile_path\", \"keyfile\", or \"credentials_provider\"",
            ));
        }
        if self
            .keyfile_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            errors.push(ConfigError::new(
                format!("{path}.keyfile_path"),
                "must not be empty",
            ));
        }
        if let Some(k) = &self.keyfile {
            k.validate(&format!("{path}.keyfile"), errors);
        }
        if self.subject.is_some() && self.credentials_provider.is_some() {
            errors.push(ConfigError::new(
                format!("{path}.subject"),
                "cannot be used with credentials_provider (domain-wide delegation needs a keyfile)",
            ));
        }
        if self.scopes.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.scopes"),
                "at least one scope is required",
            ));
        }
        validate_rules(&self.rules, &format!("{path}.rules"), errors);
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        if self.rules.is_empty() {
            out.push(format!(
                "{path}.rules: empty, so a Google token is injected into every request"
            ));
        }
    }
}
