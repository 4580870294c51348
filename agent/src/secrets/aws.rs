//! `aws_sm` (Secrets Manager) and `aws_ssm` (Parameter Store) through the official AWS SDK.
//!
//! Credentials and region come from the standard chain (env, shared config/credentials files,
//! web identity, ECS, IMDS); a configured `region` overrides the discovered one. The SDK honours
//! `AWS_ENDPOINT_URL` and the service-specific `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL_SSM`. Clients are built on the first fetch (so nothing touches the network
//! at config load) and then reused.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::OnceCell;

use super::{SecretError, SecretResolver, SecretValue};
use crate::config::transforms::source::{AwsSmSource, AwsSsmSource};
use crate::telemetry::error_chain;

/// Longest SDK error text carried into a [`SecretError`]; AWS errors never echo a secret, the
/// cap only keeps log lines readable.
const MAX_REASON: usize = 300;

/// Explicit client settings instead of (or on top of) the environment. Used by tests to point
/// at a local emulator without touching process-global env vars.
#[derive(Clone, Default)]
pub struct AwsOverrides {
    /// Endpoint for every request, e.g. `http://127.0.0.1:5000`.
    pub endpoint_url: Option<String>,
    /// Region when the source has none.
    pub region: Option<String>,
    /// Static access key id and secret key instead of the credential chain.
    pub static_credentials: Option<(String, String)>,
}

impl AwsOverrides {
    fn is_empty(&self) -> bool {
        self.endpoint_url.is_none() && self.region.is_none() && self.static_credentials.is_none()
    }
}

/// The environment's SDK config, loaded on the first AWS fetch and shared by every AWS secret
/// of one [`super::SecretRegistry`]: one credential provider (and its cache), so N secrets do
/// not mean N IMDS/STS round trips. Owned by the registry rather than a process-wide static, so
/// a reload builds a fresh chain (rotated env/profile credentials are picked up).
#[derive(Clone, Default)]
pub struct AwsEnv(Arc<OnceCell<SdkConfig>>);

pub fn secrets_manager(
    s: &AwsSmSource,
    env: &AwsEnv,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    build_sm(s, AwsOverrides::default(), env.clone())
}

pub fn parameter_store(
    s: &AwsSsmSource,
    env: &AwsEnv,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    build_ssm(s, AwsOverrides::default(), env.clone())
}

/// As [`secrets_manager`] with explicit client settings.
pub fn secrets_manager_with(
    s: &AwsSmSource,
    overrides: AwsOverrides,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    build_sm(s, overrides, AwsEnv::default())
}

/// As [`parameter_store`] with explicit client settings.
pub fn parameter_store_with(
    s: &AwsSsmSource,
    overrides: AwsOverrides,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    build_ssm(s, overrides, AwsEnv::default())
}

fn build_sm(
    s: &AwsSmSource,
    overrides: AwsOverrides,
    env: AwsEnv,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Ok(Arc::new(SecretsManagerResolver {
        secret_id: s.secret_id.clone(),
        region: s.region.clone().filter(|r| !r.is_empty()),
        overrides,
        env,
        client: OnceCell::new(),
    }))
}

fn build_ssm(
    s: &AwsSsmSource,
    overrides: AwsOverrides,
    env: AwsEnv,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Ok(Arc::new(ParameterStoreResolver {
        name: s.name.clone(),
        region: s.region.clone().filter(|r| !r.is_empty()),
        with_decryption: s.with_decryption,
        overrides,
        env,
        client: OnceCell::new(),
    }))
}

async fn sdk_config(overrides: &AwsOverrides, env: &AwsEnv) -> SdkConfig {
    if overrides.is_empty() {
        return env
            .0
            .get_or_init(|| aws_config::load_defaults(BehaviorVersion::latest()))
            .await
            .clone();
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = &overrides.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(r) = &overrides.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some((id, secret)) = &overrides.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "iron-agent-overrides",
        ));
    }
    loader.load().await
}

/// The region to use: the source's own, else the discovered one; none is a clear error rather
/// than the SDK's generic one at request time.
fn pick_region(
    source_name: &str,
    configured: &Option<String>,
    discovered: Option<&Region>,
) -> Result<Region, SecretError> {
    match (configured, discovered) {
        (Some(r), _) => Ok(Region::new(r.clone())),
        (None, Some(r)) => Ok(r.clone()),
        (None, None) => Err(remote(
            source_name,
            "no AWS region: set `region` on the source or AWS_REGION in the environment".into(),
        )),
    }
}

fn remote(source_name: &str, reason: String) -> SecretError {
    SecretError::Remote {
        source_name: source_name.to_string(),
        reason,
    }
}

/// A one-line summary of an SDK failure: the service's error code and message when AWS
/// answered, else the transport/credential error chain.
fn sdk_reason<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let s = match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => error_chain(err),
            }
        }
        other => error_chain(other),
    };
    cap(s.replace(['\n', '\r'], " "))
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

struct SecretsManagerResolver {
    secret_id: String,
    region: Option<String>,
    overrides: AwsOverrides,
    env: AwsEnv,
    client: OnceCell<aws_sdk_secretsmanager::Client>,
}

impl SecretsManagerResolver {
    async fn client(&self) -> Result<&aws_sdk_secretsmanager::Client, SecretError> {
        self.client
            .get_or_try_init(|| async {
                let base = sdk_config(&self.overrides, &self.env).await;
                let region = pick_region(
                    &self.secret_id,
                    &self.region.clone().or(self.overrides.region.clone()),
                    base.region(),
                )?;
                let conf = aws_sdk_secretsmanager::config::Builder::from(&base)
                    .region(region)
                    .build();
                Ok(aws_sdk_secretsmanager::Client::from_conf(conf))
            })
            .await
    }
}

#[async_trait]
impl SecretResolver for SecretsManagerResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let client = self.client().await?;
        let out = client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| remote(&self.secret_id, sdk_reason(&e)))?;
        match out.secret_string() {
            Some(s) if !s.is_empty() => Ok(SecretValue::new(s)),
            Some(_) => Err(remote(&self.secret_id, "SecretString is empty".into())),
            None if out.secret_binary().is_some() => Err(remote(
                &self.secret_id,
                "secret has no SecretString (binary secrets are not supported)".into(),
            )),
            None => Err(remote(&self.secret_id, "secret has no SecretString".into())),
        }
    }
}

struct ParameterStoreResolver {
    name: String,
    region: Option<String>,
    with_decryption: bool,
    overrides: AwsOverrides,
    env: AwsEnv,
    client: OnceCell<aws_sdk_ssm::Client>,
}

impl ParameterStoreResolver {
    async fn client(&self) -> Result<&aws_sdk_ssm::Client, SecretError> {
        self.client
            .get_or_try_init(|| async {
                let base = sdk_config(&self.overrides, &self.env).await;
                let region = pick_region(
                    &self.name,
                    &self.region.clone().or(self.overrides.region.clone()),
                    base.region(),
                )?;
                let conf = aws_sdk_ssm::config::Builder::from(&base)
                    .region(region)
                    .build();
                Ok(aws_sdk_ssm::Client::from_conf(conf))
            })
            .await
    }
}

#[async_trait]
impl SecretResolver for ParameterStoreResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let client = self.client().await?;
        let out = client
            .get_parameter()
            .name(&self.name)
            .with_decryption(self.with_decryption)
            .send()
            .await
            .map_err(|e| remote(&self.name, sdk_reason(&e)))?;
        match out.parameter().and_then(|p| p.value()) {
            Some(v) if !v.is_empty() => Ok(SecretValue::new(v)),
            _ => Err(remote(&self.name, "parameter has no value".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_precedence() {
        let disc = Region::new("eu-west-1");
        assert_eq!(
            pick_region("x", &Some("us-east-2".into()), Some(&disc))
                .unwrap()
                .as_ref(),
            "us-east-2"
        );
        assert_eq!(
            pick_region("x", &None, Some(&disc)).unwrap().as_ref(),
            "eu-west-1"
        );
        let e = pick_region("x", &None, None).unwrap_err().to_string();
        assert!(e.contains("no AWS region"), "{e}");
    }

    #[test]
    fn cap_respects_char_boundaries() {
        let s = "é".repeat(MAX_REASON);
        let c = cap(s);
        assert!(c.len() <= MAX_REASON + '…'.len_utf8());
    }
}
