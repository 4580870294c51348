//! Secret sources: one module per source behind one [`SecretResolver`] trait, shared by every
//! credential transform (`secrets`, `oauth_token`, `gcp_auth`, `aws_auth`, `hmac_sign`).
//!
//! A [`Secret`] is resolved at startup and cached in memory; with a `ttl` it is refreshed in the
//! background, and a failed refresh keeps serving the last good value. The request path only
//! reads the cache ([`Secret::current`]), so a slow secret store never stalls a request.
//!
//! Values are [`SecretValue`]s: their `Debug`/`Display` are redacted, so a value cannot end up
//! in a log line or an error message by accident.

pub mod aws;
pub mod cache;
pub mod control_plane;
pub mod env;
pub mod file;
pub mod json_key;
pub mod onepassword;
pub mod onepassword_connect;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::transforms::SecretSource;

pub use cache::{Secret, SecretRegistry};

/// A secret's value. Never printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<str>);

impl SecretValue {
    pub fn new(v: impl Into<Arc<str>>) -> Self {
        Self(v.into())
    }

    /// The plaintext, for the one place that must use it (building the outgoing request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret could not be read. Messages name the source, never a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("env var {0:?} is not set or empty")]
    EnvMissing(String),
    #[error("reading {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{source_name}: {reason}")]
    Remote { source_name: String, reason: String },
    #[error("secret value is not valid JSON")]
    NotJson,
    #[error("key {0:?} not found in JSON")]
    JsonKeyMissing(String),
    #[error("key {key:?} is not a string (type {kind})")]
    JsonKeyNotString { key: String, kind: &'static str },
    #[error("secret is empty")]
    Empty,
    #[error("not resolved yet")]
    Pending,
    #[error("{0}")]
    Unsupported(String),
}

/// One secret store. `fetch` returns the raw value (before `json_key` extraction).
#[async_trait]
pub trait SecretResolver: Send + Sync {
    async fn fetch(&self) -> Result<SecretValue, SecretError>;
}

/// Builds the resolver for a configured source.
/// `aws` is the registry's shared AWS environment config.
pub fn resolver_for(
    src: &SecretSource,
    aws: &aws::AwsEnv,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Ok(match src {
        SecretSource::Env(s) => Arc::new(env::EnvResolver::new(&s.var)),
        SecretSource::File(s) => Arc::new(file::FileResolver::new(&s.path)),
        SecretSource::ControlPlane(s) => Arc::new(control_plane::InlineResolver::new(&s.value)),
        SecretSource::AwsSm(s) => aws::secrets_manager(s, aws)?,
        SecretSource::AwsSsm(s) => aws::parameter_store(s, aws)?,
        SecretSource::OnePassword(s) => onepassword::resolver(s)?,
        SecretSource::OnePasswordConnect(s) => onepassword_connect::resolver(s)?,
    })
}
