//! Where the real AWS credentials come from: three secret sources (cached and refreshed by the
//! [`SecretRegistry`]), or the AWS SDK's default chain (`credentials_provider:
//! workload_identity`), built on first use and cached until shortly before expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::Region;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use tokio::sync::{Mutex, OnceCell};

use crate::config::transforms::{AwsAuthConfig, AwsCredentialsProvider};
use crate::secrets::{Secret, SecretError, SecretRegistry};
use crate::transform::build::TransformBuildError;

/// Refresh chain credentials this long before they expire, so a request never signs with a
/// credential that lapses in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// One chain lookup (IMDS, STS, ECS) may take this long before the request fails closed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{field}: {source}")]
    Source {
        field: &'static str,
        source: SecretError,
    },
    #[error("credentials provider: timed out")]
    ProviderTimeout,
    #[error("credentials provider: {}", crate::telemetry::error_chain(.0))]
    Provider(#[source] aws_credential_types::provider::error::CredentialsError),
}

pub enum CredentialSource {
    Static {
        access_key_id: Arc<Secret>,
        secret_access_key: Arc<Secret>,
        session_token: Option<Arc<Secret>>,
    },
    WorkloadIdentity(WorkloadIdentity),
}

impl CredentialSource {
    pub fn new(
        cfg: &AwsAuthConfig,
        registry: &mut SecretRegistry,
    ) -> Result<Self, TransformBuildError> {
        if let Some(p) = &cfg.credentials_provider {
            return Ok(Self::WorkloadIdentity(WorkloadIdentity::new(p)));
        }
        let mut register = |field: &'static str, src: Option<&_>| {
            // Validation requires both keys with static credentials; this only guards.
            let src = src.ok_or_else(|| TransformBuildError::invalid(field, "is required"))?;
            registry
                .register(src)
                .map_err(|e| TransformBuildError::new(field, e))
        };
        let access_key_id = register("access_key_id", cfg.access_key_id.as_ref())?;
        let secret_access_key = register("secret_access_key", cfg.secret_access_key.as_ref())?;
        let session_token = match &cfg.session_token {
            Some(s) => Some(register("session_token", Some(s))?),
            None => None,
        };
        Ok(Self::Static {
            access_key_id,
            secret_access_key,
            session_token,
        })
    }

    /// The `credential` annotation on `credential_unavailable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Static { .. } => "static",
            Self::WorkloadIdentity(_) => "workload_identity",
        }
    }

    pub async fn get(&self) -> Result<Credentials, CredentialError> {
        match self {
            Self::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let read = |field: &'static str, s: &Secret| {
                    s.current()
                        .map_err(|source| CredentialError::Source { field, source })
                };
                let ak = read("access_key_id", access_key_id)?;
                let sk = read("secret_access_key", secret_access_key)?;
                let token = match session_token {
                    Some(t) => Some(read("session_token", t)?.expose().to_string()),
                    None => None,
                };
                Ok(Credentials::new(
                    ak.expose(),
                    sk.expose(),
                    token,
                    None,
                    "iron-agent aws_auth static",
                ))
            }
            Self::WorkloadIdentity(w) => w.get().await,
        }
    }
}

/// The SDK default chain (env, profile, web identity/IRSA, EKS Pod Identity, ECS, IMDSv2).
pub struct WorkloadIdentity {
    region: Option<String>,
    chain: OnceCell<DefaultCredentialsChain>,
    /// The lock doubles as single-flight: concurrent requests wait for one lookup.
    cached: Mutex<Option<Credentials>>,
}

impl WorkloadIdentity {
    fn new(p: &AwsCredentialsProvider) -> Self {
        Self {
            region: p.region.clone().filter(|r| !r.is_empty()),
            chain: OnceCell::new(),
            cached: Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<Credentials, CredentialError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && fresh(c)
        {
            return Ok(c.clone());
        }
        let chain = self
            .chain
            .get_or_init(|| async {
                let mut b = DefaultCredentialsChain::builder();
                if let Some(r) = &self.region {
                    b = b.region(Region::new(r.clone()));
                }
                b.build().await
            })
            .await;
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, chain.provide_credentials())
            .await
            .map_err(|_| CredentialError::ProviderTimeout)?
            .map_err(CredentialError::Provider)?;
        *cached = Some(fetched.clone());
        Ok(fetched)
    }
}

fn fresh(c: &Credentials) -> bool {
    c.expiry()
        .is_none_or(|exp| exp > SystemTime::now() + EXPIRY_MARGIN)
}
