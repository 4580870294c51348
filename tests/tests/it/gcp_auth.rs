//! `gcp_auth` end to end: a Google-style token endpoint that verifies the service account's
//! RS256 assertion (signature, claims, subject) with its public key, a fake metadata server
//! for workload identity, the stubbed Google token and metadata endpoints, and fail-closed
//! minting. No key material or minted token may appear in the agent's output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::mitm::{MitmAgent, Setup, localhost_origin};
use iron_agent_tests::token_server::{Answer, Handler};
use iron_agent_tests::{Recorded, TokenServer, Transform, http_request, https_request};
use serde_json::{Value, json};

const SA_EMAIL: &str = "robot@test-project.iam.gserviceaccount.com";
const SCOPES: &str = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/bigquery.readonly";
const STUB: &str =
    r#"{"access_token":"iron-proxy-stub-token","expires_in":3600,"token_type":"Bearer"}"#;

struct ServiceAccount {
    private_pem: String,
    decoding: jsonwebtoken::DecodingKey,
}

impl ServiceAccount {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        Self {
            private_pem: key.serialize_pem(),
            decoding: jsonwebtoken::DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes())
                .unwrap(),
        }
    }

    fn keyfile(&self, token_uri: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "sa-key-id-1",
            "private_key": self.private_pem,
            "client_email": SA_EMAIL,
            "client_id": "1234567890",
            "token_uri": token_uri,
        })
        .to_string()
    }

    /// A second line of the PEM: key material that must never be logged.
    fn key_fragment(&self) -> &str {
        self.private_pem.lines().nth(1).unwrap()
    }

    /// Google's token endpoint: verifies the JWT-bearer assertion, then issues `gtoken-<n>`.
    /// The expected `aud` is the endpoint's own URL (the keyfile's `token_uri`).
    fn endpoint(self: &Arc<Self>, subject: Option<&'static str>) -> Handler {
        let me = self.clone();
        Arc::new(move |r: &Recorded, n: usize| -> Answer {
            let bad = |why: &str| {
                (
                    400,
                    "application/json",
                    json!({"error": "invalid_grant", "error_description": why}).to_string(),
                )
            };
            if r.form("grant_type").as_deref()
                != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
            {
                return bad("grant_type");
            }
            let assertion = r.form("assertion").unwrap_or_default();
            let Ok(header) = jsonwebtoken::decode_header(&assertion) else {
                return bad("header");
            };
            let aud = format!(
                "http://{}{}",
                r.header("host").unwrap_or_default(),
                r.path()
            );
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            v.set_audience(&[aud.as_str()]);
            v.set_issuer(&[SA_EMAIL]);
            v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
            let Ok(data) = jsonwebtoken::decode::<Value>(&assertion, &me.decoding, &v) else {
                return bad("signature or claims");
            };
            let c = data.claims;
            if header.kid.as_deref() != Some("sa-key-id-1")
                || c["scope"] != SCOPES
                || c["exp"].as_u64() != c["iat"].as_u64().map(|i| i + 3600)
                || c.get("sub").and_then(Value::as_str) != subject
            {
                return bad("claims");
            }
            (
                200,
                "application/json",
                json!({"access_token": format!("gtoken-{n}"), "expires_in": 3599, "token_type": "Bearer"})
                    .to_string(),
            )
        })
    }
}

async fn setup(transforms: Vec<Transform>, env: &[(&str, &str)], files: &[(&str, &str)]) -> Setup {
    let (origin, origin_ca) = localhost_origin().await;
    let m = MitmAgent::prepare(files)
        .trust(&origin_ca)
        // No ambient Google credentials: ADC must come from what the test provides.
        .env("HOME", "{dir}")
        .env("GOOGLE_APPLICATION_CREDENTIALS", "")
        .envs(env)
        .start_loopback(transforms);
    Setup { m, origin }
}

fn annotations(a: &Value) -> &Value {
    &a["request_transforms"][0]["annotations"]
}

const SCOPE_LIST: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/bigquery.readonly",
];

#[test]
fn keyfile_secret_with_subject_mints_caches_and_injects() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let sa = Arc::new(ServiceAccount::new());
        let ts = TokenServer::start(
            Duration::from_millis(300),
            sa.endpoint(Some("admin@example.com")),
        )
        .await;
        let token_uri = ts.url("/token");
        let t = vec![Transform::new(
            "gcp_auth",
            json!({
                "keyfile": {"type": "env", "var": "GCP_SA_JSON"},
                "subject": "admin@example.com",
                "scopes": SCOPE_LIST,
                "rules": [{"host": "localhost"}],
            }),
        )];
        let keyfile = sa.keyfile(&token_uri);
        let s = Arc::new(setup(t, &[("GCP_SA_JSON", &keyfile)], &[]).await);
        let calls = (0..20).map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get("/bigquery/v2/projects").await })
        });
        for r in futures_util::future::join_all(calls).await {
            let r = r.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.echoed_header("authorization").unwrap(), "Bearer gtoken-1");
        }
        assert_eq!(ts.count(), 1, "one mint for all requests");
        let a = s
            .agent
            .audits_where(20, |a| a["path"] == "/bigquery/v2/projects")
            .remove(0);
        assert_eq!(annotations(&a)["service_account"], SA_EMAIL);
        assert_eq!(annotations(&a)["injected"], json!(["header:Authorization"]));
        s.assert_not_in_logs(&[sa.key_fragment(), "gtoken-1"]);
    });
}

#[test]
fn keyfile_path_stubs_google_endpoints_before_rules() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let sa = Arc::new(ServiceAccount::new());
        let ts = TokenServer::start(Duration::ZERO, sa.endpoint(None)).await;
        let t = vec![
            Transform::new(
                "gcp_auth",
                json!({
                    "keyfile_path": "{dir}/sa.json",
                    "scopes": SCOPE_LIST,
                    "rules": [{"host": "localhost", "paths": ["/storage/*"]}],
                }),
            ),
        ];
        let keyfile = sa.keyfile(&ts.url("/token"));
        let s = setup(t, &[], &[("sa.json", &keyfile)]).await;
        let http = s.agent.addr("http");
        // Google's token endpoint (any method, form body), and both metadata server names.
        let form = http::Request::post("/token")
            .header("host", "oauth2.googleapis.com")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.e30.c",
            )))
            .unwrap();
        let r = http_request(http, form).await;
        assert_eq!((r.status, r.text()), (200, STUB.to_string()));
        for host in ["metadata.google.internal", "169.254.169.254"] {
            let req = http::Request::get(
                "/computeMetadata/v1/instance/service-accounts/default/token?scopes=x",
            )
            .header("host", host)
            .header("metadata-flavor", "Google")
            .body(Full::new(Bytes::new()))
            .unwrap();
            let r = http_request(http, req).await;
            assert_eq!((r.status, r.text()), (200, STUB.to_string()), "{host}");
            assert_eq!(r.headers["content-type"], "application/json");
        }
        let stubs = s.agent.audits_where(3, |a| a["action"] == "stub");
        for a in &stubs {
            assert_eq!(a["stubbed_by"], "gcp_auth");
            assert_eq!(annotations(a)["stubbed"], "oauth2_token_endpoint");
        }
        assert_eq!(ts.count(), 0, "stubs never mint");

        // The API call carries the workload's stub token; the agent swaps in the real one.
        let req = http::Request::get("/storage/v1/b")
            .header("host", format!("localhost:{}", s.origin.port()))
            .header("authorization", "Bearer iron-proxy-stub-token")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = https_request(s.agent.addr("https"), "localhost", s.mitm.client_config(), req)
            .await
            .unwrap();
        assert_eq!(r.echoed_header("authorization").unwrap(), "Bearer gtoken-1");
        // Outside the rules: untouched.
        let r = s.get("/other").await;
        assert_eq!(r.echoed_header("authorization"), None);
        let a = s.agent.audit_where(|a| a["path"] == "/other");
        assert_eq!(a["request_transforms"][0]["annotations"], Value::Null);
        s.assert_not_in_logs(&[sa.key_fragment(), "gtoken-1"]);
    });
}

#[test]
fn workload_identity_from_the_metadata_server() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| -> Answer {
            if r.header("metadata-flavor") != Some("Google") {
                return (403, "text/plain", "missing Metadata-Flavor".into());
            }
            match r.path() {
                "/computeMetadata/v1/instance/service-accounts/default/token"
                    if r.query("scopes").as_deref()
                        == Some("https://www.googleapis.com/auth/cloud-platform,https://www.googleapis.com/auth/bigquery.readonly") =>
                {
                    (
                        200,
                        "application/json",
                        json!({"access_token": format!("md-token-{n}"), "expires_in": 3599, "token_type": "Bearer"}).to_string(),
                    )
                }
                "/computeMetadata/v1/instance/service-accounts/default/email" => {
                    (200, "application/text", SA_EMAIL.to_string())
                }
                _ => (404, "text/plain", "not found".into()),
            }
        });
        let md = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![
            Transform::new(
                "gcp_auth",
                json!({
                    "credentials_provider": {"type": "workload_identity"},
                    "scopes": SCOPE_LIST,
                    "rules": [{"host": "localhost"}],
                }),
            ),
        ];
        let s = setup(t, &[("GCE_METADATA_HOST", &md.addr.to_string())], &[]).await;
        for _ in 0..3 {
            let r = s.get("/compute/v1/instances").await;
            assert_eq!(r.status, 200);
            assert!(
                r.echoed_header("authorization")
                    .unwrap()
                    .starts_with("Bearer md-token-")
            );
        }
        let token_calls = md
            .requests()
            .iter()
            .filter(|r| r.path().ends_with("/token"))
            .count();
        assert_eq!(token_calls, 1, "cached: {:?}", md.requests());
        let a = s
            .agent
            .audits_where(3, |a| a["path"] == "/compute/v1/instances")
            .remove(2);
        assert_eq!(annotations(&a)["service_account"], SA_EMAIL);
        assert_eq!(annotations(&a)["injected"], json!(["header:Authorization"]));
        s.assert_not_in_logs(&["md-token-1"]);
    });
}

#[test]
fn workload_identity_from_google_application_credentials() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let sa = Arc::new(ServiceAccount::new());
        let ts = TokenServer::start(Duration::ZERO, sa.endpoint(None)).await;
        let t = vec![Transform::new(
            "gcp_auth",
            json!({"credentials_provider": {"type": "workload_identity"}, "scopes": SCOPE_LIST}),
        )];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adc.json");
        std::fs::write(&path, sa.keyfile(&ts.url("/token"))).unwrap();
        let s = setup(
            t,
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", &path.to_string_lossy()),
                // Must not be used when a credentials file is named.
                ("GCE_METADATA_HOST", "127.0.0.1:9"),
            ],
            &[],
        )
        .await;
        // No rules: every request gets the token.
        let r = s.get("/anything").await;
        assert_eq!(r.echoed_header("authorization").unwrap(), "Bearer gtoken-1");
        let a = s.agent.audit_where(|a| a["path"] == "/anything");
        assert_eq!(annotations(&a)["service_account"], SA_EMAIL);
        s.assert_not_in_logs(&[sa.key_fragment(), "gtoken-1"]);
    });
}

#[test]
fn mint_failure_rejects_403_with_one_audit_record() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let sa = Arc::new(ServiceAccount::new());
        // The endpoint expects a different key: the signature check fails.
        let other = Arc::new(ServiceAccount::new());
        let ts = TokenServer::start(Duration::ZERO, other.endpoint(None)).await;
        let t = vec![Transform::new(
            "gcp_auth",
            json!({
                "keyfile": {"type": "env", "var": "GCP_SA_JSON"},
                "scopes": SCOPE_LIST,
                "rules": [{"host": "localhost"}],
            }),
        )];
        let keyfile = sa.keyfile(&ts.url("/token"));
        let s = setup(t, &[("GCP_SA_JSON", &keyfile)], &[]).await;
        let r = s.get("/api").await;
        assert_eq!(r.status, 403);
        assert_eq!(s.origin.hits(), 0);
        std::thread::sleep(Duration::from_millis(200));
        let audits = s.agent.audits();
        assert_eq!(audits.len(), 1, "exactly one audit record");
        let a = &audits[0];
        assert_eq!(a["action"], "reject");
        assert_eq!(a["status_code"], 403);
        assert_eq!(a["rejected_by"], "gcp_auth");
        assert_eq!(annotations(a)["rejected"], "token_unavailable");
        let err = annotations(a)["error"].as_str().unwrap();
        assert!(err.contains("invalid_grant"), "{err}");
        assert_eq!(ts.count(), 1);
        s.assert_not_in_logs(&[sa.key_fragment()]);
    });
}

fn b64url(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn id_tokens_minted_and_stubbed_next_to_gcp_auth() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let sa = Arc::new(ServiceAccount::new());
        let me = sa.clone();
        // Google's endpoint for ID tokens: the assertion carries target_audience, no scope.
        let handler: Handler = Arc::new(move |r: &Recorded, n: usize| -> Answer {
            let assertion = r.form("assertion").unwrap_or_default();
            let aud = format!("http://{}{}", r.header("host").unwrap_or_default(), r.path());
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            v.set_audience(&[aud.as_str()]);
            v.set_issuer(&[SA_EMAIL]);
            let ok = jsonwebtoken::decode::<Value>(&assertion, &me.decoding, &v)
                .is_ok_and(|d| {
                    d.claims["target_audience"] == "https://svc-abc.a.run.app"
                        && d.claims.get("scope").is_none()
                });
            if !ok {
                return (400, "application/json", json!({"error": "invalid_grant"}).to_string());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let id = format!(
                "{}.{}.{}",
                b64url(br#"{"alg":"RS256"}"#),
                b64url(json!({"aud": "https://svc-abc.a.run.app", "exp": now + 3600, "n": n}).to_string().as_bytes()),
                b64url(b"google-signature")
            );
            (200, "application/json", json!({"id_token": id}).to_string())
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![
            Transform::new(
                "gcp_auth",
                json!({
                    "keyfile": {"type": "env", "var": "GCP_SA_JSON"},
                    "scopes": SCOPE_LIST,
                    "rules": [{"host": "localhost", "paths": ["/api/*"]}],
                }),
            ),
            Transform::new(
                "gcp_id_token",
                json!({
                    "keyfile": {"type": "env", "var": "GCP_SA_JSON"},
                    "audience": "https://svc-abc.a.run.app",
                    "header": "x-serverless-authorization",
                    "rules": [{"host": "localhost", "paths": ["/run/*"]}],
                }),
            ),
        ];
        let keyfile = sa.keyfile(&ts.url("/token"));
        let s = setup(t, &[("GCP_SA_JSON", &keyfile)], &[]).await;
        let r = s.get("/run/job").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let injected = r.echoed_header("x-serverless-authorization").unwrap();
        let id = injected.strip_prefix("Bearer ").unwrap();
        assert_eq!(jwt_claims(id)["n"], 1);
        assert_eq!(r.echoed_header("authorization"), None);
        let a = s.agent.audit_where(|a| a["path"] == "/run/job");
        let an = &a["request_transforms"][1]["annotations"];
        assert_eq!(an["service_account"], SA_EMAIL);
        assert_eq!(an["audience"], "https://svc-abc.a.run.app");
        assert_eq!(an["injected"], json!(["header:X-Serverless-Authorization"]));
        // Cached: no second mint.
        s.get("/run/job").await;
        assert_eq!(ts.count(), 1);

        // Stubs: the metadata identity path, and an ID-token assertion to Google's endpoint
        // (gcp_auth lets it through, gcp_id_token answers it).
        let http = s.agent.addr("http");
        let req = http::Request::get(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fx.example",
        )
        .header("host", "metadata.google.internal")
        .body(Full::new(Bytes::new()))
        .unwrap();
        let r = http_request(http, req).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(jwt_claims(&r.text())["aud"], "https://x.example");
        let assertion = format!(
            "{}.{}.sig",
            b64url(br#"{"alg":"RS256"}"#),
            b64url(br#"{"target_audience":"https://y.example"}"#)
        );
        let req = http::Request::post("/token")
            .header("host", "oauth2.googleapis.com")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
            ))))
            .unwrap();
        let r = http_request(http, req).await;
        assert_eq!(r.status, 200);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(jwt_claims(body["id_token"].as_str().unwrap())["aud"], "https://y.example");
        let stubs = s.agent.audits_where(2, |a| a["action"] == "stub");
        assert_eq!(stubs[0]["stubbed_by"], "gcp_id_token");
        assert_eq!(
            stubs[0]["request_transforms"][1]["annotations"]["stubbed"],
            "gcp_metadata_identity_endpoint"
        );
        assert_eq!(
            stubs[1]["request_transforms"][1]["annotations"]["stubbed"],
            "gcp_oauth2_id_token_endpoint"
        );
        assert_eq!(ts.count(), 1, "stubs never mint");
        s.assert_not_in_logs(&[sa.key_fragment(), id]);
    });
}
