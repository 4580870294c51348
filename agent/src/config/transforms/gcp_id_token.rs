//! `gcp_id_token` (§12.9): mints Google-signed ID tokens for one audience.

use std::path::PathBuf;

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, SecretSource, require_str, validate_required_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpIdTokenConfig {
    pub keyfile_path: Option<PathBuf>,
    pub keyfile: Option<SecretSource>,
    pub audience: String,
    /// `authorization` (default) or `x-serverless-authorization`, case-insensitive.
    pub header: Option<String>,
    pub rules: Vec<RuleConfig>,
}

impl GcpIdTokenConfig {
    /// The canonical header name the token goes into.
    pub fn header_name(&self) -> &'static str {
        match self
            .header
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("x-serverless-authorization") => "X-Serverless-Authorization",
            _ => "Authorization",
        }
    }
}

impl KindConfig for GcpIdTokenConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.keyfile_path.is_some() == self.keyfile.is_some() {
            errors.push(ConfigError::new(
                path,
                "requires exactly one of \"keyfile_path\" or \"keyfile\"",
            ));
        }
        if let Some(k) = &self.keyfile {
            k.validate(&format!("{path}.keyfile"), errors);
        }
        require_str(Some(&self.audience), &format!("{path}.audience"), errors);
        if let Some(h) = &self.header {
            let l = h.to_ascii_lowercase();
            if l != "authorization" && l != "x-serverless-authorization" {
                errors.push(ConfigError::new(
                    format!("{path}.header"),
                    format!(
                        "must be \"authorization\" or \"x-serverless-authorization\"; got {h:?}"
                    ),
                ));
            }
        }
        validate_required_rules(&self.rules, &format!("{path}.rules"), errors);
    }
}
