//! `file`: the exact bytes of a file (no trimming, as iron-proxy), re-read on every refresh.

use async_trait::async_trait;

use super::{SecretError, SecretResolver, SecretValue};

pub struct FileResolver {
    path: String,
}

impl FileResolver {
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_string(),
        }
    }
}

#[async_trait]
impl SecretResolver for FileResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| SecretError::File {
                path: self.path.clone(),
                reason: e.kind().to_string(),
            })?;
        if bytes.is_empty() {
            return Err(SecretError::File {
                path: self.path.clone(),
                reason: "file is empty".into(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| SecretError::File {
            path: self.path.clone(),
            reason: "not valid UTF-8".into(),
        })?;
        Ok(SecretValue::new(text))
    }
}
