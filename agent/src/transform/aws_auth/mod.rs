//! `aws_auth`: the workload's AWS SDK signs with placeholder credentials; the agent reads the
//! region and service from that signature's scope, gates them, and re-signs the request with
//! the real credentials (SigV4, current time). The workload never holds a working key.
//!
//! Order per request: rules → scope ([`scope`]) → region/service gates → credentials
//! ([`credentials`]) → payload hash (body rules: [`signed_body`]) → re-sign ([`sign`]). Every
//! refusal is a JSON `{"error":"aws_auth","reason":...}` with the status of the documented
//! table ([`JsonReject`]).

mod credentials;
pub(crate) mod scope;
mod sign;

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;

use crate::config::transforms::AwsAuthConfig;
use crate::policy::RuleSet;
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::json_reject::JsonReject;
use crate::transform::signed_body::{self, BodyRefusal};
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};
use credentials::CredentialSource;
use sign::Payload;

pub struct AwsAuth {
    rules: RuleSet,
    /// Empty = any.
    allowed_regions: Vec<String>,
    allowed_services: Vec<String>,
    creds: CredentialSource,
    unsigned_payload: bool,
    allow_chunked_body: bool,
}

impl Build for AwsAuth {
    type Config = AwsAuthConfig;

    fn build(cfg: &AwsAuthConfig, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        let nonempty = |v: &[String]| {
            v.iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        };
        Ok(Self {
            rules: RuleSet::from_configs(&cfg.rules),
            allowed_regions: nonempty(&cfg.allowed_regions),
            allowed_services: nonempty(&cfg.allowed_services),
            creds: CredentialSource::new(cfg, cx.secrets)?,
            unsigned_payload: cfg.unsigned_payload,
            allow_chunked_body: cfg.allow_chunked_body,
        })
    }
}

/// A refusal with the documented reason and status (see the table in docs/transforms/aws_auth.md).
fn refusal(reason: &'static str, status: StatusCode) -> JsonReject {
    JsonReject::new("aws_auth", status, reason)
}

#[async_trait]
impl Transform for AwsAuth {
    fn name(&self) -> &str {
        "aws_auth"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        if req.method() == http::Method::CONNECT || !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        match self.sign_request(cx, req).await {
            Ok(()) => Ok(Verdict::Continue),
            Err(r) => Ok(r.into_verdict(cx)),
        }
    }
}

impl AwsAuth {
    async fn sign_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<(), JsonReject> {
        let scope = scope::parse(req.headers(), req.uri().query()).map_err(|e| {
            refusal("missing_sigv4", StatusCode::BAD_REQUEST).with("error", e.to_string())
        })?;
        // Gates come before any credential is read: a refused scope never touches the keys.
        if !self.allowed_regions.is_empty() && !self.allowed_regions.contains(&scope.region) {
            return Err(
                refusal("region_not_allowed", StatusCode::FORBIDDEN).with("region", scope.region)
            );
        }
        if !self.allowed_services.is_empty() && !self.allowed_services.contains(&scope.service) {
            return Err(refusal("service_not_allowed", StatusCode::FORBIDDEN)
                .with("service", scope.service));
        }
        let creds = self.creds.get().await.map_err(|e| {
            refusal("credential_unavailable", StatusCode::BAD_GATEWAY)
                .with("credential", self.creds.kind())
                .with("error", e.to_string())
        })?;
        let buffered = if self.unsigned_payload {
            None
        } else {
            Some(self.read_body(cx, req).await?)
        };
        let payload = match &buffered {
            Some(b) => Payload::Bytes(b),
            None => Payload::Unsigned,
        };
        let injected =
            sign::resign(req, &scope, creds, payload, SystemTime::now()).map_err(|e| {
                refusal("signing_failed", StatusCode::INTERNAL_SERVER_ERROR)
                    .with("error", e.to_string())
            })?;
        cx.annotate("injected", injected);
        cx.annotate("service", scope.service);
        cx.annotate("region", scope.region);
        if scope.presigned {
            cx.annotate("presigned", true);
        }
        Ok(())
    }

    /// The body the payload hash covers, buffered (within the request body limit) and put back
    /// with an exact `Content-Length`. Nothing is forwarded that differs from what was hashed.
    async fn read_body(&self, cx: &RequestCx, req: &mut ProxyRequest) -> Result<Bytes, JsonReject> {
        signed_body::read_for_signing(cx, req, self.allow_chunked_body, "aws_auth")
            .await
            .map_err(|b| {
                let mut r = refusal(b.reason(), b.status());
                if let BodyRefusal::ReadFailed(e) = &b {
                    r = r.with("error", e.to_string());
                }
                r.with_all(b.lengths())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::transforms::source::ControlPlaneSource;
    use crate::config::transforms::{RuleConfig, SecretSource};
    use crate::transform::body;

    async fn transform(chunked_ok: bool) -> AwsAuth {
        let inline = |v: &str| {
            Some(SecretSource::ControlPlane(ControlPlaneSource {
                value: v.into(),
                json_key: None,
            }))
        };
        let cfg = AwsAuthConfig {
            access_key_id: inline("AKIDEXAMPLE"),
            secret_access_key: inline("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            allow_chunked_body: chunked_ok,
            rules: vec![RuleConfig {
                host: Some("*.amazonaws.com".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut registry = crate::secrets::SecretRegistry::default();
        let mint = std::sync::Arc::new(crate::mint::TokenHttp::detached());
        let mut cx = BuildContext::new(&mut registry, &mint);
        let t = AwsAuth::build(&cfg, &mut cx).unwrap();
        registry.resolve_all().await;
        t
    }

    fn request(content_length: Option<&str>, body: ProxyBody) -> ProxyRequest {
        let mut b = http::Request::builder()
            .method("PUT")
            .uri("/bucket/key")
            .header("host", "s3.us-east-1.amazonaws.com")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            );
        if let Some(cl) = content_length {
            b = b.header("content-length", cl);
        }
        b.body(body).unwrap()
    }

    /// Runs the transform; returns the status and `rejected` annotation (None = signed).
    async fn run(t: &AwsAuth, mut req: ProxyRequest, limit: Option<u64>) -> (u16, Option<String>) {
        let mut cx = RequestCx::new(
            crate::identify::HostName::new("s3.us-east-1.amazonaws.com"),
            crate::identify::ClientAddr("127.0.0.1:1".parse().unwrap()),
            crate::transform::Mode::Mitm,
        );
        cx.request_body_limit = limit;
        let verdict = t.on_request(&mut cx, &mut req).await.unwrap();
        let notes = cx.take_annotations();
        let rejected = notes
            .get("rejected")
            .and_then(|v| v.as_str())
            .map(String::from);
        match verdict {
            Verdict::Continue => {
                let auth = req.headers()["authorization"].to_str().unwrap();
                assert!(
                    auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
                    "{auth}"
                );
                assert!(auth.contains("/us-east-1/s3/aws4_request"));
                (200, rejected)
            }
            Verdict::Reject(Some(r)) => (r.status().as_u16(), rejected),
            _ => panic!("unexpected verdict"),
        }
    }

    use crate::transform::ProxyBody;

    /// A body without a known length, as hyper presents a chunked one.
    fn chunked(data: &'static [u8]) -> ProxyBody {
        use http_body_util::BodyExt;
        let frames = futures_util::stream::iter([Ok::<_, body::BoxError>(http_body::Frame::data(
            Bytes::from_static(data),
        ))]);
        http_body_util::StreamBody::new(frames).boxed_unsync()
    }

    #[tokio::test]
    async fn body_rules() {
        let t = transform(false).await;
        let ok = run(&t, request(Some("5"), body::full("hello")), Some(16)).await;
        assert_eq!(ok, (200, None));
        let r = run(&t, request(Some("5"), body::empty()), None).await;
        assert_eq!(r, (400, Some("body_missing".into())));
        let r = run(&t, request(Some("10"), body::full("abc")), None).await;
        assert_eq!(r, (413, Some("body_truncated".into())));
        let r = run(&t, request(Some("100"), body::full("x")), Some(16)).await;
        assert_eq!(r, (413, Some("body_too_large".into())));
        let r = run(&t, request(None, chunked(b"chunk")), None).await;
        assert_eq!(r, (400, Some("chunked_body_not_allowed".into())));

        let t = transform(true).await;
        let r = run(&t, request(None, chunked(b"chunk")), None).await;
        assert_eq!(r, (200, None));
        let r = run(&t, request(None, chunked(&[b'x'; 64])), Some(16)).await;
        assert_eq!(r, (413, Some("body_too_large".into())));
    }
}
