//! `control_plane`: an inline value delivered by control-plane sync.

use async_trait::async_trait;

use super::{SecretError, SecretResolver, SecretValue};

pub struct InlineResolver {
    value: SecretValue,
}

impl InlineResolver {
    pub fn new(value: &str) -> Self {
        Self {
            value: SecretValue::new(value),
        }
    }
}

#[async_trait]
impl SecretResolver for InlineResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        if self.value.expose().is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(self.value.clone())
    }
}
