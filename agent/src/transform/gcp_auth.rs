//! `gcp_auth` (§12.8): mints Google access tokens from a service-account keyfile or from
//! Application Default Credentials and sets `Authorization: Bearer` on matching requests.
//! Google's token endpoint and the metadata server's token paths are answered with a stub
//! token before rules are evaluated, so SDKs in the workload complete their credential dance
//! without real credentials. A failed mint rejects with 403 (fail closed).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderValue, header};
use parking_lot::Mutex;
use serde_json::json;

use super::oauth_token::{MintedHeaders, stub_token_response};
use crate::config::transforms::SecretSource;
use crate::config::transforms::gcp_auth::GcpAuthConfig;
use crate::config::transforms::source::FileSource;
use crate::mint::adc::AdcSource;
use crate::mint::google::{ServiceAccountSource, id_token_request_audience, parse_service_account};
use crate::mint::{MintError, Token, TokenCache, TokenHttp};
use crate::policy::RuleSet;
use crate::secrets::{Secret, SecretRegistry};
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict, body};

const GOOGLE_TOKEN_HOST: &str = "oauth2.googleapis.com";
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "169.254.169.254"];
const METADATA_SA_PREFIX: &str = "/computeMetadata/v1/instance/service-accounts/";

#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GcpAuthBuildError {
    field: &'static str,
    message: String,
}

enum Creds {
    /// `keyfile` or `keyfile_path` (registered as a file source): the keyfile JSON.
    Keyfile {
        secret: Arc<Secret>,
        hasher: RandomState,
        current: Mutex<Option<(u64, Arc<TokenCache>)>>,
    },
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

impl GcpAuth {
    pub fn new(
        cfg: &GcpAuthConfig,
        registry: &mut SecretRegistry,
    ) -> Result<Self, GcpAuthBuildError> {
        let http = Arc::new(TokenHttp::new());
        let keyfile = |field: &'static str, src: &SecretSource, registry: &mut SecretRegistry| {
            registry
                .register(src)
                .map(|secret| Creds::Keyfile {
                    secret,
                    hasher: RandomState::new(),
                    current: Mutex::new(None),
                })
                .map_err(|e| GcpAuthBuildError {
                    field,
                    message: e.to_string(),
                })
        };
        let creds = match (&cfg.keyfile, &cfg.keyfile_path, &cfg.credentials_provider) {
            (Some(src), None, None) => keyfile("keyfile", src, registry)?,
            (None, Some(path), None) => {
                let src = SecretSource::File(FileSource {
                    path: path.to_string_lossy().into_owned(),
                    ..FileSource::default()
                });
                keyfile("keyfile_path", &src, registry)?
            }
            (None, None, Some(_)) => Creds::Adc(TokenCache::new(Arc::new(AdcSource::new(
                cfg.scopes.clone(),
                http.clone(),
            )))),
            _ => {
                return Err(GcpAuthBuildError {
                    field: "keyfile",
                    message: "requires exactly one of \"keyfile_path\", \"keyfile\", or \"credentials_provider\"".into(),
                });
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

    fn cache(&self) -> Result<Arc<TokenCache>, MintError> {
        let (secret, hasher, current) = match &self.creds {
            Creds::Adc(c) => return Ok(c.clone()),
            Creds::Keyfile {
                secret,
                hasher,
                current,
            } => (secret, hasher, current),
        };
        let json = secret.current().map_err(|e| MintError::Credential {
            field: "keyfile".into(),
            reason: e.to_string(),
        })?;
        let fp = hasher.hash_one(json.expose());
        let mut cur = current.lock();
        if let Some((old, cache)) = cur.as_ref()
            && *old == fp
        {
            return Ok(cache.clone());
        }
        let sa = parse_service_account(json.expose(), "keyfile")?;
        if cur.is_some() {
            tracing::info!(transform = "gcp_auth", service_account = %sa.client_email, "keyfile changed; rebuilding the token source");
        }
        let source = ServiceAccountSource::new(
            sa,
            self.scopes.clone(),
            self.subject.clone(),
            self.http.clone(),
        );
        let cache = TokenCache::new(Arc::new(source));
        *cur = Some((fp, cache.clone()));
        Ok(cache)
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
        let metadata_token = METADATA_HOSTS.contains(&cx.host.as_str())
            && path.starts_with(METADATA_SA_PREFIX)
            && path.ends_with("/token");
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
                let v = HeaderValue::from_str(&format!("Bearer {}", t.value.expose())).map_err(
                    |_| TransformError::Failed("minted token is not a valid header value".into()),
                )?;
                MintedHeaders::set(req, header::AUTHORIZATION, v);
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
