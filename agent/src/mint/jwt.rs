//! RFC 7523 JWT-bearer assertions, signed RS256 (the shape golang.org/x/oauth2/jwt produces).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::MintError;
use crate::secrets::SecretValue;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Assertions are valid for one hour, like Google's and x/oauth2's.
const LIFETIME_SECS: u64 = 3600;
/// `iat` is backdated so a server whose clock is slightly behind still accepts it.
const BACKDATE_SECS: u64 = 10;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    aud: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    /// Google's private claim asking for an ID token for this audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_audience: Option<&'a str>,
}

/// What goes into one assertion.
pub struct Assertion<'a> {
    pub issuer: &'a str,
    pub subject: Option<&'a str>,
    pub audience: &'a str,
    pub scopes: &'a [String],
    pub key_id: Option<&'a str>,
    pub target_audience: Option<&'a str>,
}

/// Signs `a` with the PEM RSA key (PKCS#1 or PKCS#8). Errors never include key material.
pub fn sign(a: &Assertion<'_>, private_key_pem: &SecretValue) -> Result<String, MintError> {
    let key = EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes()).map_err(|e| {
        MintError::Invalid(format!("private key is not a PEM-encoded RSA key ({e})"))
    })?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = a.key_id.filter(|k| !k.is_empty()).map(str::to_string);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let iat = now.saturating_sub(BACKDATE_SECS);
    let claims = Claims {
        iss: a.issuer,
        scope: (!a.scopes.is_empty()).then(|| a.scopes.join(" ")),
        aud: a.audience,
        exp: iat + LIFETIME_SECS,
        iat,
        sub: a.subject.filter(|s| !s.is_empty()),
        target_audience: a.target_audience,
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| MintError::Invalid(format!("signing the JWT assertion: {e}")))
}
