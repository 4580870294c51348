//! `grpc` (§12.13): delegates request/response processing to an external TransformService.

use std::path::PathBuf;

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, require_str, validate_rules};
use crate::config::{ConfigError, GoDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Used as the transform's name in traces.
    pub name: String,
    /// gRPC dial target, e.g. `localhost:9500`.
    pub target: String,
    pub send_request_body: bool,
    pub send_response_body: bool,
    /// Empty = every request is forwarded.
    pub rules: Vec<RuleConfig>,
    pub tls: GrpcTlsConfig,
    /// Deadline for connecting and for each call (iron-agent extension; iron-proxy has none).
    pub timeout: GoDuration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            target: String::new(),
            send_request_body: false,
            send_response_body: false,
            rules: Vec::new(),
            tls: GrpcTlsConfig::default(),
            timeout: GoDuration(std::time::Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcTlsConfig {
    pub enabled: bool,
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl KindConfig for GrpcConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        require_str(Some(&self.name), &format!("{path}.name"), errors);
        require_str(Some(&self.target), &format!("{path}.target"), errors);
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            errors.push(ConfigError::new(
                format!("{path}.tls"),
                "cert and key must be set together for mTLS",
            ));
        }
        validate_rules(&self.rules, &format!("{path}.rules"), errors);
        if self.timeout.0.is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.timeout"),
                "must be greater than zero",
            ));
        }
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        if self.rules.is_empty() {
            out.push(format!(
                "{path}.rules: empty, so every request is sent to {:?}",
                self.target
            ));
        }
        let t = &self.tls;
        if !t.enabled && (t.ca_cert.is_some() || t.cert.is_some() || t.key.is_some()) {
            out.push(format!(
                "{path}.tls: certificates are ignored because tls.enabled is false"
            ));
        }
    }
}
