//! Secret sources (§12.5), shared by `secrets`, `oauth_token`, `gcp_*`, `aws_auth`, `hmac_sign`.

use serde::Deserialize;

use crate::config::{ConfigError, GoDuration};

use super::require_str;

/// Where a secret value comes from, discriminated by `type`. Each variant is strict.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum SecretSource {
    #[serde(rename = "env")]
    Env(EnvSource),
    #[serde(rename = "file")]
    File(FileSource),
    #[serde(rename = "aws_sm")]
    AwsSm(AwsSmSource),
    #[serde(rename = "aws_ssm")]
    AwsSsm(AwsSsmSource),
    #[serde(rename = "1password")]
    OnePassword(OnePasswordSource),
    #[serde(rename = "1password_connect")]
    OnePasswordConnect(OnePasswordConnectSource),
    #[serde(rename = "control_plane")]
    ControlPlane(ControlPlaneSource),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvSource {
    pub var: String,
    pub json_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSource {
    pub path: String,
    pub json_key: Option<String>,
    pub ttl: Option<GoDuration>,
    pub failure_ttl: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSmSource {
    pub secret_id: String,
    pub region: Option<String>,
    pub json_key: Option<String>,
    pub ttl: Option<GoDuration>,
    pub failure_ttl: Option<GoDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSsmSource {
    pub name: String,
    pub region: Option<String>,
    pub with_decryption: bool,
    pub json_key: Option<String>,
    pub ttl: Option<GoDuration>,
    pub failure_ttl: Option<GoDuration>,
}

impl Default for AwsSsmSource {
    fn default() -> Self {
        Self {
            name: String::new(),
            region: None,
            with_decryption: true,
            json_key: None,
            ttl: None,
            failure_ttl: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnePasswordSource {
    pub secret_ref: String,
    /// Defaults to `OP_SERVICE_ACCOUNT_TOKEN`.
    pub token_env: Option<String>,
    pub json_key: Option<String>,
    pub ttl: Option<GoDuration>,
    pub failure_ttl: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnePasswordConnectSource {
    pub secret_ref: String,
    /// Defaults to `OP_CONNECT_HOST`.
    pub host_env: Option<String>,
    /// Defaults to `OP_CONNECT_TOKEN`.
    pub token_env: Option<String>,
    pub json_key: Option<String>,
    pub ttl: Option<GoDuration>,
    pub failure_ttl: Option<GoDuration>,
}

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneSource {
    pub value: String,
    pub json_key: Option<String>,
}

/// `value` is the credential itself: never printed (configs are Debug for diagnostics).
impl std::fmt::Debug for ControlPlaneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneSource")
            .field("value", &"<redacted>")
            .field("json_key", &self.json_key)
            .finish()
    }
}

/// Failure cache duration when `failure_ttl` is absent (§12.5).
pub const DEFAULT_FAILURE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl SecretSource {
    /// The `type:` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Env(_) => "env",
            Self::File(_) => "file",
            Self::AwsSm(_) => "aws_sm",
            Self::AwsSsm(_) => "aws_ssm",
            Self::OnePassword(_) => "1password",
            Self::OnePasswordConnect(_) => "1password_connect",
            Self::ControlPlane(_) => "control_plane",
        }
    }

    /// The name used in audit annotations (iron-proxy's `Source.Name()`).
    pub fn display_name(&self) -> &str {
        match self {
            Self::Env(s) => &s.var,
            Self::File(s) => &s.path,
            Self::AwsSm(s) => &s.secret_id,
            Self::AwsSsm(s) => &s.name,
            Self::OnePassword(s) => &s.secret_ref,
            Self::OnePasswordConnect(s) => &s.secret_ref,
            Self::ControlPlane(_) => "control_plane",
        }
    }

    pub fn json_key(&self) -> Option<&str> {
        match self {
            Self::Env(s) => s.json_key.as_deref(),
            Self::File(s) => s.json_key.as_deref(),
            Self::AwsSm(s) => s.json_key.as_deref(),
            Self::AwsSsm(s) => s.json_key.as_deref(),
            Self::OnePassword(s) => s.json_key.as_deref(),
            Self::OnePasswordConnect(s) => s.json_key.as_deref(),
            Self::ControlPlane(s) => s.json_key.as_deref(),
        }
    }

    /// Refresh interval; `None` = cache a success forever.
    pub fn ttl(&self) -> Option<std::time::Duration> {
        let ttl = match self {
            Self::File(s) => s.ttl,
            Self::AwsSm(s) => s.ttl,
            Self::AwsSsm(s) => s.ttl,
            Self::OnePassword(s) => s.ttl,
            Self::OnePasswordConnect(s) => s.ttl,
            Self::Env(_) | Self::ControlPlane(_) => None,
        };
        ttl.map(|d| d.0).filter(|d| !d.is_zero())
    }

    /// How long a failure before the first success is cached.
    pub fn failure_ttl(&self) -> std::time::Duration {
        let f = match self {
            Self::File(s) => s.failure_ttl,
            Self::AwsSm(s) => s.failure_ttl,
            Self::AwsSsm(s) => s.failure_ttl,
            Self::OnePassword(s) => s.failure_ttl,
            Self::OnePasswordConnect(s) => s.failure_ttl,
            Self::Env(_) | Self::ControlPlane(_) => None,
        };
        f.map(|d| d.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_FAILURE_TTL)
    }

    /// `path` is the source's own path, e.g. `transforms[1].config.secrets[0].source`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let field = |f: &str| format!("{path}.{f}");
        match self {
            Self::Env(s) => {
                if s.var.trim().is_empty() {
                    errors.push(ConfigError::new(
                        field("var"),
                        "env source requires \"var\" field",
                    ));
                }
            }
            Self::File(s) => require_str(Some(&s.path), &field("path"), errors),
            Self::AwsSm(s) => require_str(Some(&s.secret_id), &field("secret_id"), errors),
            Self::AwsSsm(s) => require_str(Some(&s.name), &field("name"), errors),
            Self::OnePassword(s) => check_op_ref(&s.secret_ref, &field("secret_ref"), errors),
            Self::OnePasswordConnect(s) => {
                check_op_ref(&s.secret_ref, &field("secret_ref"), errors)
            }
            Self::ControlPlane(s) => require_str(Some(&s.value), &field("value"), errors),
        }
        if let Some(k) = self.json_key()
            && k.is_empty()
        {
            errors.push(ConfigError::new(
                field("json_key"),
                "must not be empty when set",
            ));
        }
    }
}

/// `op://vault/item/[section/]field`.
fn check_op_ref(r: &str, path: &str, errors: &mut Vec<ConfigError>) {
    if r.trim().is_empty() {
        errors.push(ConfigError::new(path, "is required"));
        return;
    }
    let ok = r
        .strip_prefix("op://")
        .map(|rest| rest.split('/').collect::<Vec<_>>())
        .is_some_and(|parts| (3..=4).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()));
    if !ok {
        errors.push(ConfigError::new(
            path,
            format!("invalid secret reference {r:?}: expected op://vault/item/[section/]field"),
        ));
    }
}

/// Validates an optional source that the kind requires.
pub fn validate_required(source: Option<&SecretSource>, path: &str, errors: &mut Vec<ConfigError>) {
    match source {
        Some(s) => s.validate(path, errors),
        None => errors.push(ConfigError::new(path, "is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_value_never_debug_prints() {
        let s = ControlPlaneSource {
            value: "inline-credential-xyz".into(),
            json_key: Some("k".into()),
        };
        let out = format!("{s:?}");
        assert!(!out.contains("inline-credential-xyz"), "{out}");
        assert!(out.contains("json_key"));
    }
}
