//! Compiles the config's `transforms:` list into a [`Pipeline`].

use std::sync::Arc;

use super::annotate::Annotate;
use super::aws_auth::AwsAuth;
use super::body_capture::BodyCapture;
use super::gcp_auth::GcpAuth;
use super::gcp_id_token::GcpIdToken;
use super::header_allowlist::HeaderAllowlist;
use super::hmac_sign::HmacSign;
use super::oauth_token::OauthToken;
use super::secrets::Secrets;
use super::{Pipeline, Transform, allowlist::Allowlist};
use crate::config::{TransformEntry, TransformSpec};
use crate::mint::TokenHttp;
use crate::secrets::SecretRegistry;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("transforms[{index}]: {name} is not supported yet")]
    Unsupported { index: usize, name: String },
    #[error("transforms[{index}].config.{message}")]
    Invalid { index: usize, message: String },
}

/// Builds every transform, registering the secrets they use in `secrets`; credential
/// transforms mint tokens through `mint`. Kinds whose runtime does not exist yet are refused:
/// running without them would silently drop a policy.
pub fn build_pipeline(
    entries: &[TransformEntry],
    secrets: &mut SecretRegistry,
    mint: &Arc<TokenHttp>,
) -> Result<Pipeline, Vec<BuildError>> {
    let mut out: Vec<Arc<dyn Transform>> = Vec::new();
    let mut errors = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        match &e.spec {
            TransformSpec::Allowlist(cfg) => out.push(Arc::new(Allowlist::new(cfg))),
            TransformSpec::HeaderAllowlist(cfg) => out.push(Arc::new(HeaderAllowlist::new(cfg))),
            TransformSpec::Annotate(cfg) => out.push(Arc::new(Annotate::new(cfg))),
            TransformSpec::BodyCapture(cfg) => out.push(Arc::new(BodyCapture::new(cfg))),
            TransformSpec::Secrets(cfg) => match Secrets::new(cfg, secrets) {
                Ok(t) => out.push(Arc::new(t)),
                Err(err) => errors.push(BuildError::Invalid {
                    index,
                    message: err.to_string(),
                }),
            },
            TransformSpec::OauthToken(cfg) => match OauthToken::new(cfg, secrets, mint) {
                Ok(t) => out.push(Arc::new(t)),
                Err(err) => errors.push(BuildError::Invalid {
                    index,
                    message: err.to_string(),
                }),
            },
            TransformSpec::GcpAuth(cfg) => match GcpAuth::new(cfg, secrets, mint) {
                Ok(t) => out.push(Arc::new(t)),
                Err(err) => errors.push(BuildError::Invalid {
                    index,
                    message: err.to_string(),
                }),
            },
            TransformSpec::GcpIdToken(cfg) => match GcpIdToken::new(cfg, secrets, mint) {
                Ok(t) => out.push(Arc::new(t)),
                Err(err) => errors.push(BuildError::Invalid {
                    index,
                    message: err.to_string(),
                }),
            },
            TransformSpec::HmacSign(cfg) => match HmacSign::new(cfg, secrets) {
                Ok(t) => out.push(Arc::new(t)),
                Err(err) => errors.push(BuildError::Invalid {
                    index,
                    message: err.to_string(),
                }),
            },
            TransformSpec::AwsAuth(cfg) => match AwsAuth::new(cfg, secrets) {
                Ok(t) => out.push(Arc::new(t)),
                Err(message) => errors.push(BuildError::Invalid { index, message }),
            },
            _ => errors.push(BuildError::Unsupported {
                index,
                name: e.name.clone(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(Pipeline::new(out))
    } else {
        Err(errors)
    }
}
