//! The four OAuth2 grants of `oauth_token`, on the wire as golang.org/x/oauth2 sends them:
//! client authentication in the form body (`AuthStyleInParams`), form keys sorted.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{MintError, Token, TokenHttp, TokenSource, jwt};
use crate::config::transforms::oauth_token::OauthGrant;
use crate::secrets::SecretValue;

/// The non-secret part of one `tokens[]` entry.
pub struct GrantConfig {
    pub grant: OauthGrant,
    pub token_endpoint: String,
    pub scopes: Vec<String>,
    /// JWT `aud` (jwt_bearer only).
    pub audience: Option<String>,
}

/// The resolved credential values of one entry (a snapshot; a change builds a new source).
#[derive(Default, Clone)]
pub struct Credentials {
    pub refresh_token: Option<SecretValue>,
    pub client_id: Option<SecretValue>,
    pub client_secret: Option<SecretValue>,
    pub username: Option<SecretValue>,
    pub password: Option<SecretValue>,
    pub issuer: Option<SecretValue>,
    pub subject: Option<SecretValue>,
    pub private_key: Option<SecretValue>,
    pub private_key_id: Option<SecretValue>,
    /// `token_endpoint_headers`, name as configured.
    pub endpoint_headers: Vec<(String, SecretValue)>,
}

pub struct OAuthSource {
    cfg: Arc<GrantConfig>,
    creds: Credentials,
    /// The refresh token to use next: the configured one until the endpoint rotates it. Kept in
    /// memory only; never written back to the secret store.
    refresh_token: Mutex<Option<SecretValue>>,
    http: Arc<TokenHttp>,
}

impl OAuthSource {
    pub fn new(cfg: Arc<GrantConfig>, creds: Credentials, http: Arc<TokenHttp>) -> Self {
        Self {
            refresh_token: Mutex::new(creds.refresh_token.clone()),
            cfg,
            creds,
            http,
        }
    }

    fn required<'a>(v: &'a Option<SecretValue>, field: &str) -> Result<&'a SecretValue, MintError> {
        v.as_ref().ok_or_else(|| MintError::Credential {
            field: field.into(),
            reason: "not configured".into(),
        })
    }

    /// The grant's form fields (values borrowed from `owned`, which keeps them alive).
    fn form(&self, owned: &mut Vec<(&'static str, String)>) -> Result<(), MintError> {
        let c = &self.creds;
        let mut push = |k: &'static str, v: &str| owned.push((k, v.to_string()));
        let scope = self.cfg.scopes.join(" ");
        match self.cfg.grant {
            OauthGrant::RefreshToken => {
                let rt = self.refresh_token.lock().clone();
                let rt = Self::required(&rt, "refresh_token")?;
                push("grant_type", "refresh_token");
                push("refresh_token", rt.expose());
            }
            OauthGrant::ClientCredentials => {
                push("grant_type", "client_credentials");
                if !scope.is_empty() {
                    push("scope", &scope);
                }
            }
            OauthGrant::Password => {
                push("grant_type", "password");
                push(
                    "username",
                    Self::required(&c.username, "username")?.expose(),
                );
                push(
                    "password",
                    Self::required(&c.password, "password")?.expose(),
                );
                if !scope.is_empty() {
                    push("scope", &scope);
                }
            }
            OauthGrant::JwtBearer => {
                let issuer = Self::required(&c.issuer, "issuer")?;
                let subject = Self::required(&c.subject, "subject")?;
                let key = Self::required(&c.private_key, "private_key")?;
                let audience = self.cfg.audience.as_deref().unwrap_or_default();
                let assertion = jwt::sign(
                    &jwt::Assertion {
                        issuer: issuer.expose(),
                        subject: Some(subject.expose()),
                        audience,
                        scopes: &self.cfg.scopes,
                        key_id: c.private_key_id.as_ref().map(|k| k.expose()),
                        target_audience: None,
                    },
                    key,
                )?;
                push("grant_type", jwt::GRANT_TYPE);
                push("assertion", &assertion);
                // x/oauth2/jwt sends no client authentication: the signature is the proof.
                return Ok(());
            }
        }
        if let Some(id) = c.client_id.as_ref().filter(|v| !v.expose().is_empty()) {
            push("client_id", id.expose());
        }
        if let Some(s) = c.client_secret.as_ref().filter(|v| !v.expose().is_empty()) {
            push("client_secret", s.expose());
        }
        Ok(())
    }
}

#[async_trait]
impl TokenSource for OAuthSource {
    async fn mint(&self) -> Result<Token, MintError> {
        let mut owned = Vec::new();
        self.form(&mut owned)?;
        // Go's url.Values.Encode sorts by key; keep the same bytes on the wire.
        owned.sort_by(|a, b| a.0.cmp(b.0));
        let form: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = self
            .http
            .post_form(
                &self.cfg.token_endpoint,
                &form,
                &self.creds.endpoint_headers,
            )
            .await?;
        if self.cfg.grant == OauthGrant::RefreshToken
            && let Some(rotated) = reply.refresh_token
        {
            let mut cur = self.refresh_token.lock();
            if cur.as_ref() != Some(&rotated) {
                tracing::info!(
                    token_endpoint = super::http::display_url(&self.cfg.token_endpoint),
                    "token endpoint rotated the refresh token; using the new one (in memory only)"
                );
                *cur = Some(rotated);
            }
        }
        Ok(Token::new(reply.access_token, reply.expires_in))
    }
}
