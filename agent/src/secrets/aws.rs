//! `aws_sm` (Secrets Manager) and `aws_ssm` (Parameter Store) through the official AWS SDK.

use std::sync::Arc;

use super::{SecretError, SecretResolver};
use crate::config::transforms::source::{AwsSmSource, AwsSsmSource};

pub fn secrets_manager(_s: &AwsSmSource) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Err(SecretError::Unsupported(
        "aws_sm is not supported yet".into(),
    ))
}

pub fn parameter_store(_s: &AwsSsmSource) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Err(SecretError::Unsupported(
        "aws_ssm is not supported yet".into(),
    ))
}
