//! `gcp_auth` (§12.8): mints Google access tokens from a service-account keyfile or from
//! Application Default Credentials and sets `Authorization: Bearer` on matching requests.
//! Google's token endpoint and the metadata server's token paths are answered with a stub
//! token before rules are evaluated, so SDKs in the workload complete their credential dance
//! without real credentials. A failed mint rejects with 403 (fail closed).

use std::sync::Arc;

use async_trait::async_trait;
use http::header;
use serde_json::json;

use super::google::{GOOGLE_TOKEN_HOST, Keyfile, is_metadata_sa_path, keyfile_source};
use super::oauth_token::{MintedHeaders, stub_token_response};
use crate::config::transforms::gcp_auth::GcpAuthConfig;
use crate::mint::adc::AdcSource;
use crate::mint::google::{ServiceAccountSource, id_token_request_audience};
use crate::mint::{MintError, Token, TokenCache, TokenHttp};
use crate::policy::RuleSet;
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict, body};

enum Creds {
    /// `keyfile` or `keyfile_path` (registered as a file source): the keyfile JSON.
    Keyfile(Keyfile),
    Adc(Arc<TokenCache>),
}

pub struct GcpAuth {
    creds: Creds,
    scopes: Vec<String>,
    subject: Option<String>,
    /// Empty = every request (iron-proxy's behaviour; check-config warns).
    rules: RuleSet,
    http: Arc<TokenHttp>,
}

impl Build for GcpAuth {
    type Config = GcpAuthConfig;

    fn build(cfg: &GcpAuthConfig, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        let http = cx.mint.clone();
        let keyfile = keyfile_source(cfg.keyfile.as_ref(), cfg.keyfile_path.as_deref());
        let creds = match (keyfile, &cfg.credentials_provider) {
            (Some((field, src)), None) => {
                let secret = cx
                    .secrets
                    .register(&src)
                    .map_err(|e| TransformBuildError::new(field, e))?;
                Creds::Keyfile(Keyfile::new(secret))
            }
            (None, Some(_)) if cfg.keyfile.is_none() && cfg.keyfile_path.is_none() => Creds::Adc(
                TokenCache::new(Arc::new(AdcSource::new(cfg.scopes.clone(), http.clone()))),
            ),
            _ => {
                return Err(TransformBuildError::invalid(
                    "keyfile",
                    "requires exactly one of \"keyfile_path\", \"keyfile\", or \"credentials_provider\"",
                ));
            }
        };
        Ok(Self {
            creds,
            scopes: cfg.scopes.clone(),
            subject: cfg.subject.clone().filter(|s| !s.is_empty()),
            rules: RuleSet::from_configs(&cfg.rules),
            http,
        })
    }
}

impl GcpAuth {
    fn cache(&self) -> Result<Arc<TokenCache>, MintError> {
        match &self.creds {
            Creds::Adc(c) => Ok(c.clone()),
            Creds::Keyfile(k) => k.cache("gcp_auth", |sa| {
                Arc::new(ServiceAccountSource::new(
                    sa,
                    self.scopes.clone(),
                    self.subject.clone(),
                    self.http.clone(),
                ))
            }),
        }
    }

    async fn token(&self) -> Result<Token, MintError> {
        self.cache()?.token().await
    }
}

/// A token request meant for `gcp_id_token` (an ID-token assertion) is not stubbed with an
/// access token.
fn is_id_token_request(body: &[u8]) -> bool {
    id_token_request_audience(body).is_some()
}

#[async_trait]
impl Transform for GcpAuth {
    fn name(&self) -> &str {
        "gcp_auth"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        // 1. Stubs, before rules.
        let path = body::decoded_path(req);
        let metadata_token = is_metadata_sa_path(&cx.host, path, "/token");
        let google_token = cx.host == GOOGLE_TOKEN_HOST && path == "/token";
        if metadata_token
            || (google_token
                && !is_id_token_request(&body::buffer_request(req, cx.request_body_limit).await?))
        {
            cx.annotate("stubbed", "oauth2_token_endpoint");
            return Ok(Verdict::Stub(stub_token_response()));
        }
        // 2. Rules (empty = every request).
        if !self.rules.is_empty() && !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        // An earlier gcp_auth or oauth_token entry already set the token: first one wins.
        if MintedHeaders::contains(req, &header::AUTHORIZATION) {
            return Ok(Verdict::Continue);
        }
        // 3. Mint or reuse.
        match self.token().await {
            Ok(t) => {
                MintedHeaders::set_token(req, header::AUTHORIZATION, "Bearer ", &t)?;
                if let Some(p) = t.principal {
                    cx.annotate("service_account", p);
                }
                cx.annotate("injected", json!(["header:Authorization"]));
                Ok(Verdict::Continue)
            }
            Err(err) => {
                tracing::warn!(transform = "gcp_auth", error = %err, "minting a Google access token failed");
                cx.annotate("error", err.to_string());
                cx.annotate("rejected", "token_unavailable");
                Ok(Verdict::Reject(None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    #[test]
    fn id_token_requests_are_recognised() {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let a = format!("h.{}.s", enc(&json!({"target_audience": "https://svc"})));
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", crate::mint::jwt::GRANT_TYPE)
            .append_pair("assertion", &a)
            .finish();
        assert!(is_id_token_request(body.as_bytes()));
        let a = format!("h.{}.s", enc(&json!({"scope": "x"})));
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", crate::mint::jwt::GRANT_TYPE)
            .append_pair("assertion", &a)
            .finish();
        assert!(!is_id_token_request(body.as_bytes()));
        assert!(!is_id_token_request(b""));
    }
}
