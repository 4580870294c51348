//! The four OAuth2 grants of `oauth_token`, on the wire as golang.org/x/oauth2 sends them:
//! client authentication in the form body (`AuthStyleInParams`), form keys sorted.
//!
//! `client_credentials`, `password` and `refresh_token` are built by the `oauth2` crate, with
//! the agent's token client ([`TokenHttp`]) plugged in as its HTTP client. Three things stay
//! ours, because the crate cannot express iron-proxy's behaviour (docs/architecture.md,
//! "Dependencies"): the JWT-bearer grant (RFC 7523, not in the crate), the x/oauth2 wire details
//! (sorted keys, no empty client credentials, configured header casing) applied in the adapter,
//! and the response parsing (form-encoded replies, string `expires_in`, no required
//! `token_type`, iron-proxy's error codes), done on the raw reply whatever the crate concluded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, RefreshToken, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenUrl,
};
use parking_lot::Mutex;

use super::http::{RawReply, display_url, parse_token_response};
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

    /// RFC 7523 JWT-bearer: a signed assertion, no client authentication (as x/oauth2/jwt).
    async fn jwt_bearer(&self) -> Result<RawReply, MintError> {
        let c = &self.creds;
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
        // Sorted keys, like url.Values.Encode.
        let form = [
            ("assertion", assertion.as_str()),
            ("grant_type", jwt::GRANT_TYPE),
        ];
        self.http
            .post_form_raw(&self.cfg.token_endpoint, &form, &c.endpoint_headers)
            .await
    }

    /// The standard grants, through the `oauth2` crate. Returns the endpoint's raw reply.
    async fn standard_grant(&self) -> Result<RawReply, MintError> {
        let endpoint = display_url(&self.cfg.token_endpoint);
        let invalid =
            |reason: String| MintError::Invalid(format!("token request to {endpoint}: {reason}"));
        let token_url = TokenUrl::new(self.cfg.token_endpoint.clone())
            .map_err(|e| invalid(format!("invalid endpoint URL: {e}")))?;
        let c = &self.creds;
        let id = c.client_id.as_ref().map_or("", |v| v.expose());
        let mut client = BasicClient::new(ClientId::new(id.to_string()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        if let Some(s) = c.client_secret.as_ref().filter(|v| !v.expose().is_empty()) {
            client = client.set_client_secret(ClientSecret::new(s.expose().to_string()));
        }
        let scopes = self.cfg.scopes.iter().map(|s| Scope::new(s.clone()));
        let send = Adapter {
            source: self,
            raw: Mutex::new(None),
        };
        let outcome = match self.cfg.grant {
            OauthGrant::ClientCredentials => client
                .exchange_client_credentials()
                .add_scopes(scopes)
                .request_async(&send)
                .await
                .map(drop),
            OauthGrant::Password => {
                let user = Self::required(&c.username, "username")?;
                let pass = Self::required(&c.password, "password")?;
                let user = ResourceOwnerUsername::new(user.expose().to_string());
                let pass = ResourceOwnerPassword::new(pass.expose().to_string());
                client
                    .exchange_password(&user, &pass)
                    .add_scopes(scopes)
                    .request_async(&send)
                    .await
                    .map(drop)
            }
            OauthGrant::RefreshToken => {
                let rt = self.refresh_token.lock().clone();
                let rt = RefreshToken::new(Self::required(&rt, "refresh_token")?.expose().into());
                // x/oauth2 sends no scope on a refresh.
                client
                    .exchange_refresh_token(&rt)
                    .request_async(&send)
                    .await
                    .map(drop)
            }
            OauthGrant::JwtBearer => return self.jwt_bearer().await,
        };
        // The crate's verdict is not iron-proxy's (it wants JSON and `token_type`): the raw
        // reply is parsed by `parse_token_response`. Without one, the call itself failed.
        match (send.raw.into_inner(), outcome) {
            (Some(reply), _) => Ok(reply),
            (None, Err(RequestTokenError::Request(e))) => Err(e),
            (None, Err(e)) => Err(invalid(crate::telemetry::error_chain(&e))),
            (None, Ok(())) => Err(invalid("no response".into())),
        }
    }

    /// Sends the crate's form body the way x/oauth2 would have: keys sorted (url.Values.Encode),
    /// empty client credentials left out (AuthStyleInParams), our headers and casing.
    async fn send_as_x_oauth2(&self, body: &[u8]) -> Result<RawReply, MintError> {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body)
            .filter(|(k, v)| !(v.is_empty() && (k == "client_id" || k == "client_secret")))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        self.http
            .post_encoded(
                &self.cfg.token_endpoint,
                Bytes::from(body),
                &self.creds.endpoint_headers,
            )
            .await
    }
}

/// The agent's token client as the `oauth2` crate's HTTP client. Keeps the raw reply: iron-proxy's
/// parsing, not the crate's, decides what it means.
struct Adapter<'a> {
    source: &'a OAuthSource,
    raw: Mutex<Option<RawReply>>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Adapter<'_> {
    type Error = MintError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, MintError>> + Send + 'c>>;

    fn call(&'c self, req: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let reply = self.source.send_as_x_oauth2(req.body()).await?;
            let resp = crate_response(&reply);
            *self.raw.lock() = Some(reply);
            resp
        })
    }
}

/// The reply as the `oauth2` crate's HTTP client contract wants it.
fn crate_response(reply: &RawReply) -> Result<oauth2::HttpResponse, MintError> {
    let (status, ctype, body) = reply;
    let mut b = http::Response::builder().status(*status);
    if let Some(ct) = ctype {
        b = b.header(http::header::CONTENT_TYPE, ct.as_str());
    }
    b.body(body.to_vec())
        .map_err(|e| MintError::Invalid(format!("token reply: {e}")))
}

#[async_trait]
impl TokenSource for OAuthSource {
    async fn mint(&self) -> Result<Token, MintError> {
        let (status, ctype, body) = self.standard_grant().await?;
        let reply = parse_token_response(
            display_url(&self.cfg.token_endpoint),
            status,
            ctype.as_deref(),
            &body,
        )?;
        if self.cfg.grant == OauthGrant::RefreshToken
            && let Some(rotated) = reply.refresh_token
        {
            let mut cur = self.refresh_token.lock();
            if cur.as_ref() != Some(&rotated) {
                tracing::info!(
                    token_endpoint = display_url(&self.cfg.token_endpoint),
                    "token endpoint rotated the refresh token; using the new one (in memory only)"
                );
                *cur = Some(rotated);
            }
        }
        Ok(Token::new(reply.access_token, reply.expires_in))
    }
}
