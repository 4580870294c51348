//! `oauth_token` (§12.7): mints OAuth2 access tokens for four grants; every credential is a
//! secret source.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::KindConfig;
use super::source::validate_required;
use super::{RuleConfig, SecretSource, validate_required_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthTokenConfig {
    pub tokens: Vec<OauthTokenEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OauthGrant {
    RefreshToken,
    ClientCredentials,
    Password,
    JwtBearer,
}

impl OauthGrant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
            Self::JwtBearer => "jwt_bearer",
        }
    }

    /// (required, optional) credential fields for this grant.
    pub fn credential_fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::RefreshToken => (&["refresh_token", "client_id"], &["client_secret"]),
            Self::ClientCredentials => (&["client_id", "client_secret"], &[]),
            Self::Password => (&["username", "password", "client_id"], &["client_secret"]),
            Self::JwtBearer => (&["issuer", "subject", "private_key"], &["private_key_id"]),
        }
    }
}

pub const DEFAULT_OAUTH_HEADER: &str = "Authorization";
pub const DEFAULT_OAUTH_VALUE_PREFIX: &str = "Bearer ";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthTokenEntry {
    pub grant: Option<OauthGrant>,
    pub token_endpoint: String,
    pub scopes: Vec<String>,
    pub rules: Vec<RuleConfig>,
    /// Defaults to `Authorization`.
    pub header: Option<String>,
    /// Defaults to `Bearer `.
    pub value_prefix: Option<String>,
    /// Reject with 502 when minting fails. Default true, as documented (iron-proxy's code
    /// defaults to forwarding untouched); `false` forwards without the header.
    pub require: Option<bool>,
    /// Header name → source, sent on the token POST only (name casing preserved).
    pub token_endpoint_headers: BTreeMap<String, SecretSource>,
    pub refresh_token: Option<SecretSource>,
    pub client_id: Option<SecretSource>,
    pub client_secret: Option<SecretSource>,
    pub username: Option<SecretSource>,
    pub password: Option<SecretSource>,
    pub issuer: Option<SecretSource>,
    pub subject: Option<SecretSource>,
    pub private_key: Option<SecretSource>,
    pub private_key_id: Option<SecretSource>,
    /// JWT `aud` claim (plain string), required for `jwt_bearer`.
    pub audience: Option<String>,
}

impl OauthTokenEntry {
    pub fn header(&self) -> &str {
        self.header
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_OAUTH_HEADER)
    }

    pub fn require(&self) -> bool {
        self.require.unwrap_or(true)
    }

    pub fn value_prefix(&self) -> &str {
        self.value_prefix
            .as_deref()
            .unwrap_or(DEFAULT_OAUTH_VALUE_PREFIX)
    }

    /// The credential source configured under `field`, if any.
    pub fn credential(&self, field: &str) -> Option<&SecretSource> {
        match field {
            "refresh_token" => self.refresh_token.as_ref(),
            "client_id" => self.client_id.as_ref(),
            "client_secret" => self.client_secret.as_ref(),
            "username" => self.username.as_ref(),
            "password" => self.password.as_ref(),
            "issuer" => self.issuer.as_ref(),
            "subject" => self.subject.as_ref(),
            "private_key" => self.private_key.as_ref(),
            "private_key_id" => self.private_key_id.as_ref(),
            _ => None,
        }
    }

    const ALL_CREDENTIALS: [&'static str; 9] = [
        "refresh_token",
        "client_id",
        "client_secret",
        "username",
        "password",
        "issuer",
        "subject",
        "private_key",
        "private_key_id",
    ];

    /// Credential fields set but not read by the grant (reported as warnings).
    fn unused_fields(&self, grant: OauthGrant) -> Vec<&'static str> {
        let (req, opt) = grant.credential_fields();
        let mut out: Vec<&'static str> = Self::ALL_CREDENTIALS
            .iter()
            .copied()
            .filter(|f| self.credential(f).is_some() && !req.contains(f) && !opt.contains(f))
            .collect();
        if grant != OauthGrant::JwtBearer && self.audience.is_some() {
            out.push("audience");
        }
        out
    }

    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match self.grant {
            None => errors.push(ConfigError::new(
                format!("{path}.grant"),
                "is required (one of refresh_token, client_credentials, password, jwt_bearer)",
            )),
            Some(grant) => {
                let (req, opt) = grant.credential_fields();
                for f in req {
                    if self.credential(f).is_none() {
                        errors.push(ConfigError::new(
                            format!("{path}.{f}"),
                            format!("is required for grant {}", grant.as_str()),
                        ));
                    }
                }
                for f in req.iter().chain(opt) {
                    if let Some(s) = self.credential(f) {
                        s.validate(&format!("{path}.{f}"), errors);
                    }
                }
                if grant == OauthGrant::JwtBearer
                    && self.audience.as_deref().is_none_or(|a| a.trim().is_empty())
                {
                    errors.push(ConfigError::new(
                        format!("{path}.audience"),
                        "is required for grant jwt_bearer",
                    ));
                }
            }
        }
        let ep = format!("{path}.token_endpoint");
        if self.token_endpoint.trim().is_empty() {
            errors.push(ConfigError::new(ep, "is required"));
        } else if !(self.token_endpoint.starts_with("https://")
            || self.token_endpoint.starts_with("http://"))
        {
            errors.push(ConfigError::new(
                ep,
                format!("must be an http(s) URL; got {:?}", self.token_endpoint),
            ));
        }
        if self.header.as_deref().is_some_and(|h| h.trim().is_empty()) {
            errors.push(ConfigError::new(
                format!("{path}.header"),
                "must not be empty when set",
            ));
        }
        for (name, src) in &self.token_endpoint_headers {
            let p = format!("{path}.token_endpoint_headers.{name}");
            if name.trim().is_empty() {
                errors.push(ConfigError::new(&p, "header name must not be empty"));
            }
            validate_required(Some(src), &p, errors);
        }
        validate_required_rules(&self.rules, &format!("{path}.rules"), errors);
    }
}

impl KindConfig for OauthTokenConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.tokens.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.tokens"),
                "at least one entry in \"tokens\" is required",
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            t.validate(&format!("{path}.tokens[{i}]"), errors);
        }
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        for (i, t) in self.tokens.iter().enumerate() {
            if let Some(grant) = t.grant {
                for f in t.unused_fields(grant) {
                    out.push(format!(
                        "{path}.tokens[{i}].{f}: not used by grant {}",
                        grant.as_str()
                    ));
                }
            }
        }
    }
}
