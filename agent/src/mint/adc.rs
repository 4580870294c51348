//! Application Default Credentials for `credentials_provider: {type: workload_identity}`, in
//! Google's order: the file named by `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's well-known
//! file, then the metadata server (`GCE_METADATA_HOST` overrides `metadata.google.internal`,
//! as in Google's libraries).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::google::{GoogleCredentials, ServiceAccountSource, parse};
use super::oauth::{Credentials, GrantConfig, OAuthSource};
use super::{MintError, Token, TokenHttp, TokenSource, http};
use crate::config::transforms::oauth_token::OauthGrant;

pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
const ADC_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";
const SA_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default";

/// Reads an environment variable (injectable for tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Application Default Credentials, resolved on every mint (a rotated credentials file or a
/// re-bound pod identity is picked up by the next refresh).
pub struct AdcSource {
    scopes: Vec<String>,
    http: Arc<TokenHttp>,
    env: EnvLookup,
    /// The metadata server's service-account email, fetched once.
    metadata_email: Mutex<Option<String>>,
}

impl AdcSource {
    pub fn new(scopes: Vec<String>, http: Arc<TokenHttp>) -> Self {
        Self::with_env(scopes, http, Arc::new(|k| std::env::var(k).ok()))
    }

    pub fn with_env(scopes: Vec<String>, http: Arc<TokenHttp>, env: EnvLookup) -> Self {
        Self {
            scopes,
            http,
            env,
            metadata_email: Mutex::new(None),
        }
    }

    fn credentials_file(&self) -> Option<(PathBuf, &'static str)> {
        if let Some(p) = (self.env)(ADC_ENV).filter(|p| !p.is_empty()) {
            return Some((PathBuf::from(p), ADC_ENV));
        }
        let home = (self.env)("HOME").filter(|h| !h.is_empty())?;
        let p = PathBuf::from(home).join(".config/gcloud/application_default_credentials.json");
        p.is_file()
            .then_some((p, "gcloud application default credentials"))
    }

    async fn mint_from_file(&self, path: PathBuf, origin: &str) -> Result<Token, MintError> {
        let what = format!("{origin} file {}", path.display());
        let json = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| MintError::Invalid(format!("reading {what}: {e}")))?;
        match parse(&json, &what)? {
            GoogleCredentials::ServiceAccount(sa) => {
                ServiceAccountSource::new(sa, self.scopes.clone(), None, self.http.clone())
                    .mint()
                    .await
            }
            GoogleCredentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let cfg = Arc::new(GrantConfig {
                    grant: OauthGrant::RefreshToken,
                    token_endpoint: token_uri,
                    scopes: Vec::new(),
                    audience: None,
                });
                let creds = Credentials {
                    refresh_token: Some(refresh_token),
                    client_id: Some(client_id),
                    client_secret: Some(client_secret),
                    ..Credentials::default()
                };
                OAuthSource::new(cfg, creds, self.http.clone()).mint().await
            }
        }
    }

    fn metadata_base(&self) -> String {
        let host = (self.env)(METADATA_HOST_ENV)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_METADATA_HOST.into());
        format!("http://{host}{SA_PATH}")
    }

    async fn mint_from_metadata(&self) -> Result<Token, MintError> {
        let base = self.metadata_base();
        let mut url = format!("{base}/token");
        if !self.scopes.is_empty() {
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("scopes", &self.scopes.join(","))
                .finish();
            url = format!("{url}?{q}");
        }
        let (status, ctype, body) = self
            .http
            .get(&url, &[("Metadata-Flavor", "Google")])
            .await?;
        let reply =
            http::parse_token_response(http::display_url(&url), status, ctype.as_deref(), &body)?;
        let mut t = Token::new(reply.access_token, reply.expires_in);
        t.principal = self.metadata_email(&base).await;
        Ok(t)
    }

    /// Best effort: the annotation is informative, the token is what matters.
    async fn metadata_email(&self, base: &str) -> Option<String> {
        if let Some(e) = self.metadata_email.lock().clone() {
            return Some(e);
        }
        let url = format!("{base}/email");
        let (status, _, body) = self
            .http
            .get(&url, &[("Metadata-Flavor", "Google")])
            .await
            .ok()?;
        let email = String::from_utf8(body.to_vec()).ok()?.trim().to_string();
        if !status.is_success()
            || email.is_empty()
            || email.len() > 256
            || email.contains(char::is_whitespace)
        {
            return None;
        }
        *self.metadata_email.lock() = Some(email.clone());
        Some(email)
    }
}

#[async_trait]
impl TokenSource for AdcSource {
    async fn mint(&self) -> Result<Token, MintError> {
        match self.credentials_file() {
            Some((path, origin)) => self.mint_from_file(path, origin).await,
            None => self.mint_from_metadata().await,
        }
    }
}
