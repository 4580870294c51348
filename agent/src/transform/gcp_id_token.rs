//! `gcp_id_token` (§12.9): mints Google-signed ID tokens for one `audience` (Cloud Run, IAP,
//! Cloud Functions) from a service-account keyfile and sets them on matching requests. The
//! metadata server's identity path and ID-token requests to Google's token endpoint are
//! answered with a fake, unsigned-looking JWT so SDKs in the workload never need a keyfile.
//! A failed mint rejects with 403 (fail closed).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use http::{HeaderName, StatusCode};
use serde_json::json;

use super::google::{GOOGLE_TOKEN_HOST, Keyfile, is_metadata_sa_path, keyfile_source};
use super::oauth_token::MintedHeaders;
use crate::config::transforms::gcp_id_token::GcpIdTokenConfig;
use crate::mint::google::{IdTokenSource, id_token_request_audience};
use crate::mint::{MintError, Token, TokenCache, TokenHttp};
use crate::policy::RuleSet;
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::{
    ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict, body,
};

const STUB_AUDIENCE: &str = "iron-proxy-stub-audience";

pub struct GcpIdToken {
    keyfile: Keyfile,
    audience: String,
    header: HeaderName,
    location: String,
    rules: RuleSet,
    http: Arc<TokenHttp>,
}

impl Build for GcpIdToken {
    type Config = GcpIdTokenConfig;

    fn build(
        cfg: &GcpIdTokenConfig,
        cx: &mut BuildContext<'_>,
    ) -> Result<Self, TransformBuildError> {
        let (field, src) = keyfile_source(cfg.keyfile.as_ref(), cfg.keyfile_path.as_deref())
            .ok_or_else(|| {
                TransformBuildError::invalid(
                    "keyfile",
                    "requires exactly one of \"keyfile_path\" or \"keyfile\"",
                )
            })?;
        let secret = cx
            .secrets
            .register(&src)
            .map_err(|e| TransformBuildError::new(field, e))?;
        let keyfile = Keyfile::new(secret);
        let name = cfg.header_name();
        Ok(Self {
            keyfile,
            audience: cfg.audience.clone(),
            header: HeaderName::from_static(if name == "Authorization" {
                "authorization"
            } else {
                "x-serverless-authorization"
            }),
            location: format!("header:{name}"),
            rules: RuleSet::from_configs(&cfg.rules),
            http: cx.mint.clone(),
        })
    }
}

impl GcpIdToken {
    fn cache(&self) -> Result<Arc<TokenCache>, MintError> {
        self.keyfile.cache("gcp_id_token", |sa| {
            Arc::new(IdTokenSource::new(
                sa,
                self.audience.clone(),
                self.http.clone(),
            ))
        })
    }

    async fn token(&self) -> Result<Token, MintError> {
        self.cache()?.token().await
    }
}

/// A JWT-shaped placeholder: Google's claims, a signature no verifier accepts.
pub fn fake_id_token(audience: &str) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "iron-proxy-stub",
        "sub": "iron-proxy-stub",
        "email": "stub@iron-proxy.local",
        "email_verified": true,
        "iat": iat,
        "exp": iat + 3600,
    });
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(b"stub-signature")
    )
}

fn respond(content_type: &'static str, text: String) -> ProxyResponse {
    body::respond(StatusCode::OK, content_type, text)
}

/// `?audience=` of a metadata identity request, when non-empty.
fn query_audience(req: &ProxyRequest) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == "audience")
        .map(|(_, v)| v.into_owned())
        .filter(|a| !a.is_empty())
}

#[async_trait]
impl Transform for GcpIdToken {
    fn name(&self) -> &str {
        "gcp_id_token"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        // 1. Stubs, before rules.
        let path = body::decoded_path(req);
        if is_metadata_sa_path(&cx.host, path, "/identity")
            && let Some(aud) = query_audience(req)
        {
            cx.annotate("stubbed", "gcp_metadata_identity_endpoint");
            cx.annotate("audience", aud.clone());
            return Ok(Verdict::Stub(respond("text/plain", fake_id_token(&aud))));
        }
        if cx.host == GOOGLE_TOKEN_HOST && path == "/token" {
            let form = body::buffer_request(req, cx.request_body_limit).await?;
            if let Some(aud) = id_token_request_audience(&form) {
                let aud = if aud.is_empty() {
                    STUB_AUDIENCE.to_string()
                } else {
                    aud
                };
                cx.annotate("stubbed", "gcp_oauth2_id_token_endpoint");
                let body = json!({"id_token": fake_id_token(&aud), "expires_in": 3600, "token_type": "Bearer"});
                return Ok(Verdict::Stub(respond("application/json", body.to_string())));
            }
        }
        // 2. Rules (at least one, validated).
        if !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        if MintedHeaders::contains(req, &self.header) {
            return Ok(Verdict::Continue);
        }
        // 3. Mint or reuse.
        match self.token().await {
            Ok(t) => {
                MintedHeaders::set_token(req, self.header.clone(), "Bearer ", &t)?;
                if let Some(p) = t.principal {
                    cx.annotate("service_account", p);
                }
                cx.annotate("audience", self.audience.clone());
                cx.annotate("injected", json!([self.location]));
                Ok(Verdict::Continue)
            }
            Err(err) => {
                tracing::warn!(transform = "gcp_id_token", error = %err, "minting a Google ID token failed");
                cx.annotate("error", err.reason());
                cx.annotate("rejected", "token_unavailable");
                Ok(Verdict::Reject(None))
            }
        }
    }
}
