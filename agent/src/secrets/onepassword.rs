//! `1password`: resolves with a service-account token through the `op` CLI (`op read`).

use std::sync::Arc;

use super::{SecretError, SecretResolver};
use crate::config::transforms::source::OnePasswordSource;

pub fn resolver(_s: &OnePasswordSource) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Err(SecretError::Unsupported(
        "1password is not supported yet".into(),
    ))
}
