//! `env`: the value of an environment variable of the agent process.

use async_trait::async_trait;

use super::{SecretError, SecretResolver, SecretValue};

pub struct EnvResolver {
    var: String,
}

impl EnvResolver {
    pub fn new(var: &str) -> Self {
        Self {
            var: var.to_string(),
        }
    }
}

#[async_trait]
impl SecretResolver for EnvResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        match std::env::var(&self.var) {
            Ok(v) if !v.is_empty() => Ok(SecretValue::new(v)),
            _ => Err(SecretError::EnvMissing(self.var.clone())),
        }
    }
}
