//! Google credentials files and service-account exchanges: access tokens (JWT-bearer at the
//! keyfile's `token_uri`, as golang.org/x/oauth2/google does) and ID tokens
//! (`target_audience`). Application Default Credentials are in [`super::adc`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::{MintError, Token, TokenHttp, TokenSource, http, jwt};
use crate::secrets::SecretValue;

pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

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

impl ServiceAccount {
    /// Signs a JWT-bearer assertion for the keyfile's `token_uri` and POSTs it there.
    async fn exchange(
        &self,
        http: &TokenHttp,
        subject: Option<&str>,
        scopes: &[String],
        target_audience: Option<&str>,
    ) -> Result<(::http::StatusCode, Option<String>, bytes::Bytes), MintError> {
        let assertion = jwt::sign(
            &jwt::Assertion {
                issuer: &self.client_email,
                subject,
                audience: &self.token_uri,
                scopes,
                key_id: self.private_key_id.as_deref(),
                target_audience,
            },
            &self.private_key,
        )?;
        http.post_form_raw(
            &self.token_uri,
            &[("assertion", &assertion), ("grant_type", jwt::GRANT_TYPE)],
            &[],
        )
        .await
    }

    fn token(&self, reply: http::TokenReply) -> Token {
        let mut t = Token::new(reply.access_token, reply.expires_in);
        t.principal = Some(self.client_email.clone());
        t
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
        let (status, ctype, body) = self
            .sa
            .exchange(&self.http, self.subject.as_deref(), &self.scopes, None)
            .await?;
        let endpoint = http::display_url(&self.sa.token_uri);
        let reply = http::parse_token_response(endpoint, status, ctype.as_deref(), &body)?;
        Ok(self.sa.token(reply))
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
        let (status, _, body) = self
            .sa
            .exchange(&self.http, None, &[], Some(&self.audience))
            .await?;
        let endpoint = http::display_url(&self.sa.token_uri);
        let reply = http::parse_id_token_response(endpoint, status, &body)?;
        Ok(self.sa.token(reply))
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
