//! `aws_auth` (§12.10): re-signs SigV4 requests with static sources or the SDK default chain.

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, SecretSource, validate_required_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsAuthConfig {
    pub access_key_id: Option<SecretSource>,
    pub secret_access_key: Option<SecretSource>,
    pub session_token: Option<SecretSource>,
    pub credentials_provider: Option<AwsCredentialsProvider>,
    /// Empty = any region.
    pub allowed_regions: Vec<String>,
    /// Empty = any service.
    pub allowed_services: Vec<String>,
    pub unsigned_payload: bool,
    pub allow_chunked_body: bool,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentialsProvider {
    #[serde(rename = "type")]
    pub kind: AwsCredentialsProviderType,
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsCredentialsProviderType {
    WorkloadIdentity,
}

impl KindConfig for AwsAuthConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let any_static = self.access_key_id.is_some()
            || self.secret_access_key.is_some()
            || self.session_token.is_some();
        if any_static && self.credentials_provider.is_some() {
            errors.push(ConfigError::new(
                path,
                "set either access_key_id/secret_access_key or credentials_provider, not both",
            ));
        } else if !any_static && self.credentials_provider.is_none() {
            errors.push(ConfigError::new(
                path,
                "requires either access_key_id and secret_access_key, or credentials_provider",
            ));
        } else if any_static {
            for (name, src) in [
                ("access_key_id", &self.access_key_id),
                ("secret_access_key", &self.secret_access_key),
            ] {
                if src.is_none() {
                    errors.push(ConfigError::new(
                        format!("{path}.{name}"),
                        "is required when static credentials are used",
                    ));
                }
            }
        }
        for (name, src) in [
            ("access_key_id", &self.access_key_id),
            ("secret_access_key", &self.secret_access_key),
            ("session_token", &self.session_token),
        ] {
            if let Some(s) = src {
                s.validate(&format!("{path}.{name}"), errors);
            }
        }
        for (field, list) in [
            ("allowed_regions", &self.allowed_regions),
            ("allowed_services", &self.allowed_services),
        ] {
            for (i, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    errors.push(ConfigError::new(
                        format!("{path}.{field}[{i}]"),
                        "must not be empty",
                    ));
                }
            }
        }
        validate_required_rules(&self.rules, &format!("{path}.rules"), errors);
    }
}
