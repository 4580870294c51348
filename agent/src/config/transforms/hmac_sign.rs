//! `hmac_sign` (§12.11): HMAC over a templated message, injected through templated headers.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::KindConfig;
use super::{RuleConfig, SecretSource, template, validate_required_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacSignConfig {
    pub timestamp: HmacTimestampConfig,
    pub signature: HmacSignatureConfig,
    /// Name → source; must include `secret` (the HMAC key).
    pub credentials: BTreeMap<String, SecretSource>,
    /// Injected in order, with the configured casing.
    pub headers: Vec<HmacHeader>,
    pub allow_chunked_body: bool,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacTimestampConfig {
    pub format: TimestampFormat,
}

// The reference table marks these enums "required", but iron-proxy defaults them and the prose
// says "the defaults match most APIs"; accepting the defaults refuses nothing iron-proxy accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    #[default]
    UnixSeconds,
    UnixMillis,
    UnixNanos,
    Rfc3339,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacSignatureConfig {
    pub algorithm: HmacAlgorithm,
    pub key_encoding: KeyEncoding,
    pub output_encoding: OutputEncoding,
    /// Go template over `.Timestamp .Method .Path .PathWithQuery .Query .Host .Body`.
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
    Sha1,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEncoding {
    #[default]
    Raw,
    Base64,
    Hex,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputEncoding {
    #[default]
    Base64,
    Hex,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacHeader {
    pub name: String,
    /// Go template over `.Timestamp .Signature .Credentials.<name>`.
    pub value: String,
}

pub const MESSAGE_FIELDS: [&str; 8] = [
    "Timestamp",
    "Method",
    "Path",
    "PathWithQuery",
    "Query",
    "Host",
    "Body",
    "Credentials",
];
pub const HEADER_FIELDS: [&str; 3] = ["Timestamp", "Signature", "Credentials"];

impl HmacSignConfig {
    /// Checks a template and that every `.Credentials.<name>` it reads is configured.
    fn check_template(
        &self,
        tpl: &str,
        allowed: &[&str],
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) {
        match template::check(tpl, allowed) {
            Err(e) => errors.push(ConfigError::new(path, format!("parsing template: {e}"))),
            Ok(refs) => {
                for r in refs {
                    if let Some(name) = r.strip_prefix("Credentials.") {
                        let name = name.split('.').next().unwrap_or_default();
                        if !self.credentials.contains_key(name) {
                            errors.push(ConfigError::new(
                                path,
                                format!(
                                    "references .Credentials.{name}, which is not in credentials"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}

impl KindConfig for HmacSignConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let msg_path = format!("{path}.signature.message");
        if self.signature.message.is_empty() {
            errors.push(ConfigError::new(&msg_path, "is required"));
        } else {
            self.check_template(&self.signature.message, &MESSAGE_FIELDS, &msg_path, errors);
        }
        if !self.credentials.contains_key("secret") {
            errors.push(ConfigError::new(
                format!("{path}.credentials"),
                "must include \"secret\" (the HMAC key)",
            ));
        }
        for (name, src) in &self.credentials {
            src.validate(&format!("{path}.credentials.{name}"), errors);
        }
        if self.headers.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.headers"),
                "at least one header is required",
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            let p = format!("{path}.headers[{i}]");
            if h.name.trim().is_empty() {
                errors.push(ConfigError::new(format!("{p}.name"), "is required"));
            } else if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                errors.push(ConfigError::new(
                    format!("{p}.name"),
                    format!("{:?} is not a valid header name", h.name),
                ));
            }
            if h.value.is_empty() {
                errors.push(ConfigError::new(format!("{p}.value"), "is required"));
            } else {
                self.check_template(&h.value, &HEADER_FIELDS, &format!("{p}.value"), errors);
            }
        }
        validate_required_rules(&self.rules, &format!("{path}.rules"), errors);
    }
}
