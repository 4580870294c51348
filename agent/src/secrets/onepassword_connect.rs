//! `1password_connect`: resolves `op://vault/item/[section/]field` through a Connect server.

use std::sync::Arc;

use super::{SecretError, SecretResolver};
use crate::config::transforms::source::OnePasswordConnectSource;

pub fn resolver(_s: &OnePasswordConnectSource) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Err(SecretError::Unsupported(
        "1password_connect is not supported yet".into(),
    ))
}
