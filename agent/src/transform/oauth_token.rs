//! `oauth_token` (§12.7): mints OAuth2 access tokens from credentials the workload never
//! sees and sets them on matching requests; answers the workload's own requests to a
//! configured `token_endpoint` with a stub token.
//!
//! Each entry keeps one [`TokenCache`] built from a snapshot of its resolved credentials. When
//! a credential's value changes (a `ttl` re-read after rotation), the fingerprint changes and a
//! fresh token source replaces the old one, dropping any rotated refresh token with it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use crate::config::transforms::oauth_token::{OauthGrant, OauthTokenConfig, OauthTokenEntry};
use crate::identify::HostName;
use crate::mint::oauth::{Credentials, GrantConfig, OAuthSource};
use crate::mint::{MintError, PerCredentials, Token, TokenCache, TokenHttp};
use crate::policy::RuleSet;
use crate::secrets::{Secret, SecretRegistry};
use crate::transform::build::{Build, BuildContext, BuildProblem, TransformBuildError};
use crate::transform::headers::canonical_name;
use crate::transform::{
    ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict, body,
};

/// The token every stubbed token endpoint hands out; worthless outside the agent.
pub const STUB_TOKEN_BODY: &str =
    r#"{"access_token":"iron-proxy-stub-token","expires_in":3600,"token_type":"Bearer"}"#;

/// `200 application/json` with [`STUB_TOKEN_BODY`].
pub fn stub_token_response() -> ProxyResponse {
    json_response(StatusCode::OK, STUB_TOKEN_BODY.to_string())
}

fn json_response(status: StatusCode, json: String) -> ProxyResponse {
    body::respond(status, "application/json", json)
}

/// Headers a minting transform (`oauth_token`, `gcp_auth`) already set on this request. A later
/// one leaves them alone: the first credential transform in config order wins (documented).
#[derive(Debug, Clone, Default)]
pub struct MintedHeaders(Vec<HeaderName>);

impl MintedHeaders {
    pub fn contains(req: &ProxyRequest, name: &HeaderName) -> bool {
        req.extensions()
            .get::<MintedHeaders>()
            .is_some_and(|m| m.0.contains(name))
    }

    /// Sets `name: <prefix><token>` and records it.
    pub fn set_token(
        req: &mut ProxyRequest,
        name: HeaderName,
        prefix: &str,
        token: &Token,
    ) -> Result<(), TransformError> {
        // The error never quotes the value: it is the token.
        let v = HeaderValue::from_str(&format!("{prefix}{}", token.value.expose()))
            .map_err(|_| TransformError::Invalid("minted token is not a valid header value"))?;
        Self::set(req, name, v);
        Ok(())
    }

    /// Sets `name: value` and records it.
    fn set(req: &mut ProxyRequest, name: HeaderName, mut value: HeaderValue) {
        value.set_sensitive(true);
        req.headers_mut().insert(name.clone(), value);
        match req.extensions_mut().get_mut::<MintedHeaders>() {
            Some(m) => m.0.push(name),
            None => {
                req.extensions_mut().insert(MintedHeaders(vec![name]));
            }
        }
    }
}

pub struct OauthToken {
    entries: Vec<Entry>,
    /// (host, path) of every configured token endpoint.
    stubs: Vec<(HostName, String)>,
}

struct Entry {
    grant: OauthGrant,
    cfg: Arc<GrantConfig>,
    rules: RuleSet,
    header: HeaderName,
    /// `header:<Canonical>` for the `injected` annotation.
    location: String,
    prefix: String,
    require: bool,
    fields: Vec<(&'static str, Arc<Secret>)>,
    endpoint_headers: Vec<(String, Arc<Secret>)>,
    http: Arc<TokenHttp>,
    tokens: PerCredentials,
}

/// Host (normalised, port dropped) and path (`/` when empty) of a token endpoint URL.
pub fn endpoint_host_path(url: &str) -> Option<(HostName, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = HostName::new(uri.host()?);
    let path = match uri.path() {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    Some((host, path))
}

impl Build for OauthToken {
    type Config = OauthTokenConfig;

    fn build(
        cfg: &OauthTokenConfig,
        cx: &mut BuildContext<'_>,
    ) -> Result<Self, TransformBuildError> {
        let http = cx.mint.clone();
        let mut entries = Vec::new();
        let mut stubs = Vec::new();
        for (index, e) in cfg.tokens.iter().enumerate() {
            let at = |field: &str| format!("tokens[{index}].{field}");
            let stub = endpoint_host_path(&e.token_endpoint).ok_or_else(|| {
                TransformBuildError::invalid(at("token_endpoint"), "is not a valid URL")
            })?;
            stubs.push(stub);
            entries.push(Entry::new(e, cx.secrets, http.clone(), &at)?);
        }
        Ok(Self { entries, stubs })
    }
}

impl Entry {
    /// `at` turns a field of this entry into its path in `config`.
    fn new(
        e: &OauthTokenEntry,
        registry: &mut SecretRegistry,
        http: Arc<TokenHttp>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Self, TransformBuildError> {
        let err = |field: &str, problem: BuildProblem| TransformBuildError::new(at(field), problem);
        let grant = e
            .grant
            .ok_or_else(|| err("grant", BuildProblem::Invalid("is required")))?;
        let (required, optional) = grant.credential_fields();
        let mut fields = Vec::new();
        for f in required.iter().chain(optional) {
            if let Some(src) = e.credential(f) {
                let s = registry.register(src).map_err(|x| err(f, x.into()))?;
                fields.push((*f, s));
            }
        }
        let mut endpoint_headers = Vec::new();
        for (name, src) in &e.token_endpoint_headers {
            let field = format!("token_endpoint_headers.{name}");
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err(&field, BuildProblem::Invalid("is not a valid header name")))?;
            let s = registry.register(src).map_err(|x| err(&field, x.into()))?;
            endpoint_headers.push((name.clone(), s));
        }
        let header = HeaderName::from_bytes(e.header().as_bytes())
            .map_err(|_| err("header", BuildProblem::HeaderName(e.header().to_string())))?;
        HeaderValue::from_str(e.value_prefix()).map_err(|_| {
            err(
                "value_prefix",
                BuildProblem::Invalid("is not a valid header value"),
            )
        })?;
        Ok(Self {
            grant,
            cfg: Arc::new(GrantConfig {
                grant,
                token_endpoint: e.token_endpoint.clone(),
                scopes: e.scopes.clone(),
                audience: e.audience.clone(),
            }),
            rules: RuleSet::from_configs(&e.rules),
            location: format!("header:{}", canonical_name(e.header())),
            header,
            prefix: e.value_prefix().to_string(),
            require: e.require(),
            fields,
            endpoint_headers,
            http,
            tokens: PerCredentials::default(),
        })
    }

    /// The current credential values; a missing one fails the mint (fail closed).
    fn credentials(&self) -> Result<(u64, Credentials), MintError> {
        let mut h = self.tokens.hasher();
        let mut c = Credentials::default();
        let value = |field: &str, s: &Secret| {
            s.current().map_err(|e| MintError::Credential {
                field: field.to_string(),
                reason: e.to_string(),
            })
        };
        for (field, s) in &self.fields {
            let v = value(field, s)?;
            field.hash(&mut h);
            v.expose().hash(&mut h);
            let slot = match *field {
                "refresh_token" => &mut c.refresh_token,
                "client_id" => &mut c.client_id,
                "client_secret" => &mut c.client_secret,
                "username" => &mut c.username,
                "password" => &mut c.password,
                "issuer" => &mut c.issuer,
                "subject" => &mut c.subject,
                "private_key" => &mut c.private_key,
                "private_key_id" => &mut c.private_key_id,
                // `credential_fields` names nothing else.
                _ => continue,
            };
            *slot = Some(v);
        }
        for (name, s) in &self.endpoint_headers {
            let v = value(&format!("token_endpoint_headers.{name}"), s)?;
            name.hash(&mut h);
            v.expose().hash(&mut h);
            c.endpoint_headers.push((name.clone(), v));
        }
        Ok((h.finish(), c))
    }

    /// The token cache for the current credentials, rebuilt when they changed.
    fn cache(&self) -> Result<Arc<TokenCache>, MintError> {
        let (fp, creds) = self.credentials()?;
        self.tokens.get(fp, |replacing| {
            if replacing {
                tracing::info!(
                    transform = "oauth_token",
                    grant = self.grant.as_str(),
                    "credentials changed; rebuilding the token source"
                );
            }
            Ok(Arc::new(OAuthSource::new(
                self.cfg.clone(),
                creds,
                self.http.clone(),
            )))
        })
    }

    async fn token(&self) -> Result<Token, MintError> {
        self.cache()?.token().await
    }
}

#[async_trait]
impl Transform for OauthToken {
    fn name(&self) -> &str {
        "oauth_token"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        // 1. The workload's own token requests get the stub, whatever the rules say.
        let path = body::decoded_path(req);
        if self.stubs.iter().any(|(h, p)| *h == cx.host && p == path) {
            cx.annotate("stubbed", "oauth2_token_endpoint");
            return Ok(Verdict::Stub(stub_token_response()));
        }
        // 2. First matching entry wins.
        let Some(e) = self
            .entries
            .iter()
            .find(|e| e.rules.matches(&cx.match_input(req)))
        else {
            return Ok(Verdict::Continue);
        };
        if MintedHeaders::contains(req, &e.header) {
            return Ok(Verdict::Continue);
        }
        cx.annotate("grant", e.grant.as_str());
        match e.token().await {
            Ok(t) => {
                MintedHeaders::set_token(req, e.header.clone(), &e.prefix, &t)?;
                cx.annotate("injected", json!([e.location]));
                Ok(Verdict::Continue)
            }
            Err(err) => {
                tracing::warn!(
                    transform = "oauth_token",
                    grant = e.grant.as_str(),
                    error = %err,
                    "minting an access token failed"
                );
                cx.annotate("error", err.reason());
                if !e.require {
                    cx.annotate("skipped", "token_unavailable");
                    return Ok(Verdict::Continue);
                }
                cx.annotate("rejected", "token_unavailable");
                let body = json!({
                    "error": "oauth_token failed to mint an access token",
                    "grant": e.grant.as_str(),
                });
                Ok(Verdict::Reject(Some(json_response(
                    StatusCode::BAD_GATEWAY,
                    body.to_string(),
                ))))
            }
        }
    }
}
