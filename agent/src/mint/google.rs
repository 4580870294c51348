//! Google credentials: service-account keyfiles (JWT-bearer exchange at the keyfile's
//! `token_uri`, as golang.org/x/oauth2/google does) and Application Default Credentials for
//! `credentials_provider: {type: workload_identity}`.
//!
//! ADC order, as Google's libraries: the file named by `GOOGLE_APPLICATION_CREDENTIALS`, then
//! gcloud's well-known file, then the metadata server (`GCE_METADATA_HOST` overrides
//! `metadata.google.internal`, as in Google's libraries).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Deserialize;

use super::oauth::{Credentials, GrantConfig, OAuthSource};
use super::{MintError, Token, TokenHttp, TokenSource, http, jwt};
use crate::config::transforms::oauth_token::OauthGrant;
use crate::secrets::SecretValue;

pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
const ADC_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";
const SA_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default";

#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A parsed Google credentials JSON.
pub enum GoogleCredentials {
    ServiceAccount(ServiceAccount),
    /// gcloud user credentials (`gcloud auth application-default login`).
    AuthorizedUser {
        client_id: SecretValue,
        client_secret: SecretValue,
        refresh_token: SecretValue,
        token_uri: String,
    },
}

#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: SecretValue,
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Parses a credentials JSON. `what` names it in errors ("keyfile", a path); serde's message is
/// not used because it can quote the input.
pub fn parse(json: &str, what: &str) -> Result<GoogleCredentials, MintError> {
    let f: CredentialsFile = serde_json::from_str(json).map_err(|e| {
        MintError::Invalid(format!(
            "{what}: not a Google credentials JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let missing = |field: &str| MintError::Invalid(format!("{what}: {field} is missing"));
    let token_uri = nonempty(f.token_uri).unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
    match f.kind.as_deref() {
        Some("service_account") => Ok(GoogleCredentials::ServiceAccount(ServiceAccount {
            client_email: nonempty(f.client_email).ok_or_else(|| missing("client_email"))?,
            private_key: SecretValue::new(
                nonempty(f.private_key).ok_or_else(|| missing("private_key"))?,
            ),
            private_key_id: nonempty(f.private_key_id),
            token_uri,
        })),
        Some("authorized_user") => Ok(GoogleCredentials::AuthorizedUser {
            client_id: SecretValue::new(nonempty(f.client_id).ok_or_else(|| missing("client_id"))?),
            client_secret: SecretValue::new(
                nonempty(f.client_secret).ok_or_else(|| missing("client_secret"))?,
            ),
            refresh_token: SecretValue::new(
                nonempty(f.refresh_token).ok_or_else(|| missing("refresh_token"))?,
            ),
            token_uri,
        }),
        Some(other) => Err(MintError::Invalid(format!(
            "{what}: credentials type {other:?} is not supported (expected \"service_account\" or \"authorized_user\")"
        ))),
        None => Err(missing("type")),
    }
}

/// A service-account keyfile; anything else is refused (like `google.JWTConfigFromJSON`).
pub fn parse_service_account(json: &str, what: &str) -> Result<ServiceAccount, MintError> {
    match parse(json, what)? {
        GoogleCredentials::ServiceAccount(sa) => Ok(sa),
        GoogleCredentials::AuthorizedUser { .. } => Err(MintError::Invalid(format!(
            "{what}: credentials type \"authorized_user\" is not a service-account keyfile"
        ))),
    }
}

/// Service-account JWT-bearer exchange: `iss` = `client_email`, `aud` = `token_uri`,
/// `scope` = the scopes, `sub` = the delegated user, `kid` = `private_key_id`.
pub struct ServiceAccountSource {
    sa: ServiceAccount,
    scopes: Vec<String>,
    subject: Option<String>,
    http: Arc<TokenHttp>,
}

impl ServiceAccountSource {
    pub fn new(
        sa: ServiceAccount,
        scopes: Vec<String>,
        subject: Option<String>,
        http: Arc<TokenHttp>,
    ) -> Self {
        Self {
            sa,
            scopes,
            subject,
            http,
        }
    }
}

#[async_trait]
impl TokenSource for ServiceAccountSource {
    async fn mint(&self) -> Result<Token, MintError> {
        let assertion = jwt::sign(
            &jwt::Assertion {
                issuer: &self.sa.client_email,
                subject: self.subject.as_deref(),
                audience: &self.sa.token_uri,
                scopes: &self.scopes,
                key_id: self.sa.private_key_id.as_deref(),
                target_audience: None,
            },
            &self.sa.private_key,
        )?;
        let reply = self
            .http
            .post_form(
                &self.sa.token_uri,
                &[("assertion", &assertion), ("grant_type", jwt::GRANT_TYPE)],
                &[],
            )
            .await?;
        let mut t = Token::new(reply.access_token, reply.expires_in);
        t.principal = Some(self.sa.client_email.clone());
        Ok(t)
    }
}

/// A Google-signed ID token for `audience`: the service account's assertion carries
/// `target_audience` instead of scopes, and the endpoint answers with `id_token`.
pub struct IdTokenSource {
    sa: ServiceAccount,
    audience: String,
    http: Arc<TokenHttp>,
}

impl IdTokenSource {
    pub fn new(sa: ServiceAccount, audience: String, http: Arc<TokenHttp>) -> Self {
        Self { sa, audience, http }
    }
}

#[async_trait]
impl TokenSource for IdTokenSource {
    async fn mint(&self) -> Result<Token, MintError> {
        let assertion = jwt::sign(
            &jwt::Assertion {
                issuer: &self.sa.client_email,
                subject: None,
                audience: &self.sa.token_uri,
                scopes: &[],
                key_id: self.sa.private_key_id.as_deref(),
                target_audience: Some(&self.audience),
            },
            &self.sa.private_key,
        )?;
        let (status, _, body) = self
            .http
            .post_form_raw(
                &self.sa.token_uri,
                &[("assertion", &assertion), ("grant_type", jwt::GRANT_TYPE)],
                &[],
            )
            .await?;
        let reply =
            http::parse_id_token_response(http::display_url(&self.sa.token_uri), status, &body)?;
        let mut t = Token::new(reply.access_token, reply.expires_in);
        t.principal = Some(self.sa.client_email.clone());
        Ok(t)
    }
}

/// For a form body sent to Google's token endpoint: the `target_audience` of a JWT-bearer
/// assertion asking for an ID token (the assertion is read, not verified), else `None`.
pub fn id_token_request_audience(form_body: &[u8]) -> Option<String> {
    use base64::Engine;
    let mut grant = None;
    let mut assertion = None;
    for (k, v) in form_urlencoded::parse(form_body) {
        match k.as_ref() {
            "grant_type" => grant = Some(v.into_owned()),
            "assertion" => assertion = Some(v.into_owned()),
            _ => {}
        }
    }
    if grant.as_deref() != Some(jwt::GRANT_TYPE) {
        return None;
    }
    let payload = assertion?.split('.').nth(1)?.to_string();
    let claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
    claims
        .get("target_audience")
        .and_then(|a| a.as_str())
        .map(str::to_string)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_never_quotes_the_input() {
        let e = parse("{\"type\": 5, \"private_key\": \"SECRETKEY\"}", "keyfile")
            .err()
            .unwrap();
        assert!(!e.to_string().contains("SECRETKEY"), "{e}");
        let e = parse("{\"type\":\"external_account\"}", "keyfile")
            .err()
            .unwrap();
        assert!(e.to_string().contains("external_account"));
        assert!(matches!(
            parse_service_account(
                r#"{"type":"authorized_user","client_id":"a","client_secret":"b","refresh_token":"c"}"#,
                "k"
            ),
            Err(MintError::Invalid(_))
        ));
        let sa = parse_service_account(
            r#"{"type":"service_account","client_email":"a@b","private_key":"k"}"#,
            "k",
        )
        .ok()
        .unwrap();
        assert_eq!(sa.token_uri, GOOGLE_TOKEN_URI);
    }
}
