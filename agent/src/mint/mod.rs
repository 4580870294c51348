//! Minting short-lived access tokens from long-lived credentials, for the credential
//! transforms (`oauth_token`, `gcp_auth`).
//!
//! A [`TokenSource`] performs one exchange (OAuth2 grant, Google service-account JWT, metadata
//! server); a [`TokenCache`] in front of it hands out the cached token, refreshes it ahead of
//! expiry in the background and lets concurrent requests share one mint. Token-endpoint calls
//! are the agent's own traffic ([`TokenHttp`]): bounded in time, and their errors never carry a
//! credential or token value.

pub mod adc;
pub mod cache;
pub mod google;
pub mod http;
pub mod jwt;
pub mod oauth;
pub mod response;

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::secrets::SecretValue;

pub use cache::{PerCredentials, TokenCache};
pub use http::TokenHttp;

/// A minted access token. The value never prints (`SecretValue`).
#[derive(Clone, Debug)]
pub struct Token {
    pub value: SecretValue,
    pub issued_at: Instant,
    /// `None`: the endpoint gave no lifetime; the token is used until the credentials change.
    pub expires_at: Option<Instant>,
    /// The identity the token acts as, when known (`client_email`), for audit annotations.
    pub principal: Option<String>,
}

impl Token {
    pub fn new(value: SecretValue, expires_in: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            value,
            issued_at: now,
            expires_at: expires_in.map(|d| now + d),
            principal: None,
        }
    }
}

/// Why a mint failed. Messages name endpoints, fields and OAuth error codes, never values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    #[error("credential {field} is unavailable: {reason}")]
    Credential { field: String, reason: String },
    #[error("token endpoint {endpoint} rejected the request: HTTP {status}, error {code:?}")]
    OAuth {
        endpoint: String,
        status: u16,
        code: String,
    },
    #[error("token endpoint {endpoint} returned HTTP {status}")]
    Status { endpoint: String, status: u16 },
    #[error("token endpoint {endpoint}: {reason}")]
    BadResponse { endpoint: String, reason: String },
    #[error("token endpoint {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl MintError {
    /// The short reason recorded as the `error` annotation (iron-proxy's values): the OAuth
    /// `error` code, `token_endpoint_http_<status>`, `token_endpoint_error` or `mint_failed`.
    pub fn reason(&self) -> String {
        match self {
            Self::OAuth { code, .. } => code.clone(),
            Self::Status { status, .. } => format!("token_endpoint_http_{status}"),
            Self::BadResponse { .. } => "token_endpoint_error".into(),
            Self::Credential { .. } | Self::Transport { .. } | Self::Invalid(_) => {
                "mint_failed".into()
            }
        }
    }
}

/// One way of obtaining an access token.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn mint(&self) -> Result<Token, MintError>;
}
