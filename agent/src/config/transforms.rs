//! The `transforms:` list: one typed, strict config per transform kind.

use serde::{Deserialize, Deserializer};

use super::{Cidr, ConfigError};

/// One `{name, config}` element, with `config` decoded strictly for its kind.
#[derive(Debug, Clone)]
pub struct TransformEntry {
    pub name: String,
    pub spec: TransformSpec,
}

/// Every transform kind iron-proxy documents. Kinds whose runtime is not built yet still parse
/// and validate, and are refused at startup with `transforms[i]: <name> is not supported yet`.
#[derive(Debug, Clone)]
pub enum TransformSpec {
    Allowlist(AllowlistConfig),
    /// Parsed but not yet typed; the owning issue replaces these with strict structs.
    Other(serde_json::Value),
}

impl TransformEntry {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match &self.spec {
            TransformSpec::Allowlist(a) => a.validate(&format!("{path}.config"), errors),
            TransformSpec::Other(_) => {}
        }
    }
}

impl<'de> Deserialize<'de> for TransformEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: String,
            #[serde(default)]
            config: serde_json::Value,
        }
        let raw = Raw::deserialize(d)?;
        let config = if raw.config.is_null() { serde_json::json!({}) } else { raw.config };
        let spec = match raw.name.as_str() {
            "allowlist" => TransformSpec::Allowlist(decode(config)?),
            "header_allowlist" | "annotate" | "secrets" | "body_capture" | "oauth_token"
            | "gcp_auth" | "gcp_id_token" | "aws_auth" | "hmac_sign" | "judge" | "grpc" => {
                TransformSpec::Other(config)
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown transform {other:?}, expected one of allowlist, header_allowlist, \
                     annotate, secrets, body_capture, oauth_token, gcp_auth, gcp_id_token, \
                     aws_auth, hmac_sign, judge, grpc"
                )));
            }
        };
        Ok(TransformEntry { name: raw.name, spec })
    }
}

fn decode<T: serde::de::DeserializeOwned, E: serde::de::Error>(v: serde_json::Value) -> Result<T, E> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        E::custom(format!("config.{path}: {}", e.into_inner()))
    })
}

/// `allowlist` config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowlistConfig {
    pub domains: Vec<String>,
    pub cidrs: Vec<Cidr>,
    pub rules: Vec<RuleConfig>,
    pub warn: bool,
}

impl AllowlistConfig {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        for (i, r) in self.rules.iter().enumerate() {
            r.validate(&format!("{path}.rules[{i}]"), errors);
        }
    }
}

/// A destination rule shared by every transform: `host` or `cidr`, plus optional methods/paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub host: Option<String>,
    pub cidr: Option<Cidr>,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
}

impl RuleConfig {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match (&self.host, &self.cidr) {
            (Some(_), Some(_)) => {
                errors.push(ConfigError::new(path, "host and cidr are mutually exclusive"))
            }
            (None, None) => errors.push(ConfigError::new(path, "one of host or cidr is required")),
            _ => {}
        }
        for (i, p) in self.paths.iter().enumerate() {
            if !p.starts_with('/') {
                errors.push(ConfigError::new(
                    format!("{path}.paths[{i}]"),
                    format!("path {p:?} must start with /"),
                ));
            }
        }
    }
}

/// Top-level `mcp` block (typed by the MCP issue; kept strict-as-JSON for now).
pub type McpConfig = serde_json::Value;
