//! `oauth_token` end to end: the real agent, a local token endpoint that checks each grant's
//! form fields, client authentication and extra headers and issues expiring tokens, and an
//! HTTPS origin that echoes the header the agent injected. No credential or minted token may
//! appear in the agent's output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::config::UpstreamProxy;
use iron_agent_tests::mitm::{MitmAgent, Setup, localhost_origin};
use iron_agent_tests::proxies::TestProxy;
use iron_agent_tests::token_server::{Answer, Handler};
use iron_agent_tests::{AgentConfig, Recorded, TestCa, TokenServer, Transform, http_request};
use serde_json::{Value, json};

const CLIENT_ID: &str = "client-id-4711";
const CLIENT_SECRET: &str = "client-secret-s3cr3t-value";
const API_KEY: &str = "token-endpoint-api-key-xyz";
const REFRESH: &str = "refresh-token-original-0";

/// Starts an HTTPS echo origin on localhost and the agent with `transforms` (`{dir}` is a temp
/// directory).
async fn setup(transforms: Vec<Transform>, env: &[(&str, &str)], files: &[(&str, &str)]) -> Setup {
    setup_trusting(transforms, env, files, None).await
}

/// As [`setup`], with the agent also trusting `extra` (a TLS token endpoint's CA).
async fn setup_trusting(
    transforms: Vec<Transform>,
    env: &[(&str, &str)],
    files: &[(&str, &str)],
    extra: Option<&TestCa>,
) -> Setup {
    let (origin, origin_ca) = localhost_origin().await;
    let mut b = MitmAgent::prepare(files).trust(&origin_ca).envs(env);
    if let Some(ca) = extra {
        b = b.trust(ca);
    }
    let m = b.start_loopback(transforms);
    Setup { m, origin }
}

fn token_json(token: &str, expires_in: u64) -> Answer {
    (
        200,
        "application/json",
        json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})
            .to_string(),
    )
}

fn oauth_error(status: u16, code: &str) -> Answer {
    (
        status,
        "application/json",
        json!({"error": code, "error_description": "rejected by the test endpoint"}).to_string(),
    )
}

/// Checks client authentication in the form body (x/oauth2's AuthStyleInParams).
fn client_auth_ok(r: &Recorded, with_secret: bool) -> bool {
    r.form("client_id").as_deref() == Some(CLIENT_ID)
        && r.form("client_secret").as_deref() == with_secret.then_some(CLIENT_SECRET)
        && r.header("authorization").is_none()
}

fn annotations(a: &Value, i: usize) -> &Value {
    &a["request_transforms"][i]["annotations"]
}

#[test]
fn client_credentials_single_flight_cache_and_endpoint_headers() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| {
            let ok = r.method == "POST"
                && r.path() == "/oauth2/token"
                && r.header("content-type") == Some("application/x-www-form-urlencoded")
                && r.form("grant_type").as_deref() == Some("client_credentials")
                && r.form("scope").as_deref() == Some("read write")
                && client_auth_ok(r, true)
                // token_endpoint_headers: value and the configured name casing on the wire
                && r.headers.iter().any(|(k, v)| k == "X-API-Key" && v == API_KEY);
            if ok {
                token_json(&format!("cc-token-{n}"), 3600)
            } else {
                oauth_error(400, "invalid_request")
            }
        });
        let ts = TokenServer::start(Duration::from_secs(1), handler).await;
        let t = vec![
            Transform::new(
                "oauth_token",
                json!({
                    "tokens": [
                        {
                            "grant": "client_credentials",
                            "client_id": {"type": "env", "var": "CC_ID"},
                            "client_secret": {"type": "env", "var": "CC_SECRET"},
                            "token_endpoint": ts.url("/oauth2/token"),
                            "token_endpoint_headers": {"X-API-Key": {"type": "env", "var": "CC_API_KEY"}},
                            "scopes": ["read", "write"],
                            "rules": [{"host": "localhost"}],
                        },
                    ],
                }),
            ),
        ];
        let s = setup(
            t,
            &[
                ("CC_ID", CLIENT_ID),
                ("CC_SECRET", CLIENT_SECRET),
                ("CC_API_KEY", API_KEY),
            ],
            &[],
        )
        .await;
        // 50 concurrent requests while the endpoint takes 1 s: one mint between them.
        let s = Arc::new(s);
        let calls = (0..50).map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get("/api").await })
        });
        for r in futures_util::future::join_all(calls).await {
            let r = r.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                r.echoed_header("authorization").unwrap(),
                "Bearer cc-token-1"
            );
        }
        // Later requests reuse the cached token.
        for _ in 0..5 {
            let r = s.get("/api").await;
            assert_eq!(
                r.echoed_header("authorization").unwrap(),
                "Bearer cc-token-1"
            );
        }
        assert_eq!(ts.count(), 1, "exactly one mint: {:?}", ts.requests());
        let req = &ts.requests()[0];
        // Form keys sorted, as Go's url.Values.Encode writes them.
        assert_eq!(
            req.form_keys(),
            ["client_id", "client_secret", "grant_type", "scope"]
        );
        let audits = s.agent.audits_where(55, |a| a["path"] == "/api");
        for a in &audits {
            assert_eq!(a["action"], "allow");
            assert_eq!(annotations(a, 0)["grant"], "client_credentials");
            assert_eq!(
                annotations(a, 0)["injected"],
                json!(["header:Authorization"])
            );
        }
        s.assert_not_in_logs(&[CLIENT_SECRET, API_KEY, "cc-token-1"]);
    });
}

#[test]
fn refresh_token_rotation_and_refresh_ahead_of_expiry() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        // Every exchange rotates the refresh token; only the latest one is accepted.
        let current = Arc::new(std::sync::Mutex::new(REFRESH.to_string()));
        let cur = current.clone();
        let handler: Handler = Arc::new(move |r: &Recorded, n: usize| {
            let mut cur = cur.lock().unwrap();
            let ok = r.form("grant_type").as_deref() == Some("refresh_token")
                && r.form("refresh_token").as_deref() == Some(cur.as_str())
                // refresh requests carry no scope (x/oauth2), a public client no secret
                && r.form("scope").is_none()
                && client_auth_ok(r, false);
            if !ok {
                return oauth_error(400, "invalid_grant");
            }
            *cur = format!("refresh-token-rotated-{n}");
            (
                200,
                "application/json",
                json!({"access_token": format!("rt-token-{n}"), "expires_in": 6, "refresh_token": *cur})
                    .to_string(),
            )
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![
            Transform::new(
                "oauth_token",
                json!({
                    "tokens": [
                        {
                            "grant": "refresh_token",
                            "refresh_token": {"type": "env", "var": "RT_TOKEN"},
                            "client_id": {"type": "env", "var": "RT_ID"},
                            "token_endpoint": ts.url("/token"),
                            "scopes": ["ignored.on.refresh"],
                            "rules": [{"host": "localhost"}],
                        },
                    ],
                }),
            ),
        ];
        let s = setup(t, &[("RT_TOKEN", REFRESH), ("RT_ID", CLIENT_ID)], &[]).await;
        let r = s.get("/a").await;
        let first = Instant::now();
        assert_eq!(r.echoed_header("authorization").unwrap(), "Bearer rt-token-1");
        assert_eq!(ts.count(), 1);
        // The token lives 6 s: its successor is minted from 4 s on, and it is no longer handed
        // out after 5.4 s. It was minted just before `first`.
        tokio::time::sleep(Duration::from_millis(4400).saturating_sub(first.elapsed())).await;
        let r = s.get("/a").await;
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            "Bearer rt-token-1",
            "still valid: served while its successor is minted in the background"
        );
        ts.wait_count(2).await;
        let r = s.get("/a").await;
        assert_eq!(r.echoed_header("authorization").unwrap(), "Bearer rt-token-2");
        // The second exchange used the rotated refresh token (the endpoint refuses others).
        let reqs = ts.requests();
        assert_eq!(reqs[1].form("refresh_token").unwrap(), "refresh-token-rotated-1");
        // A request long after expiry gets a fresh token (minted in the foreground).
        tokio::time::sleep(Duration::from_millis(6200)).await;
        let r = s.get("/a").await;
        assert_eq!(r.echoed_header("authorization").unwrap(), "Bearer rt-token-3");
        assert_eq!(ts.requests()[2].form("refresh_token").unwrap(), "refresh-token-rotated-2");
        s.assert_not_in_logs(&[
            REFRESH,
            "refresh-token-rotated-1",
            "refresh-token-rotated-2",
            "rt-token-1",
            "rt-token-2",
        ]);
    });
}

#[test]
fn password_grant_stub_and_first_match_wins() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| {
            let grant = r.form("grant_type").unwrap_or_default();
            match grant.as_str() {
                "password"
                    if r.form("username").as_deref() == Some("svc-user")
                        && r.form("password").as_deref() == Some("svc-password-123")
                        && client_auth_ok(r, true) =>
                {
                    token_json(&format!("pw-token-{n}"), 3600)
                }
                "client_credentials" if client_auth_ok(r, true) => {
                    token_json(&format!("cc-token-{n}"), 3600)
                }
                _ => oauth_error(401, "invalid_client"),
            }
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![Transform::new(
            "oauth_token",
            json!({
                "tokens": [
                    {
                        "grant": "password",
                        "username": {"type": "env", "var": "PW_USER"},
                        "password": {"type": "env", "var": "PW_PASS"},
                        "client_id": {"type": "env", "var": "PW_ID"},
                        "client_secret": {"type": "env", "var": "PW_SECRET"},
                        "token_endpoint": ts.url("/token"),
                        "header": "X-Api-Token",
                        "value_prefix": "Token ",
                        "rules": [{"host": "localhost", "paths": ["/special/*"]}],
                    },
                    {
                        "grant": "client_credentials",
                        "client_id": {"type": "env", "var": "PW_ID"},
                        "client_secret": {"type": "env", "var": "PW_SECRET"},
                        "token_endpoint": ts.url("/token"),
                        "rules": [{"host": "localhost"}],
                    },
                ],
            }),
        )];
        let s = setup(
            t,
            &[
                ("PW_USER", "svc-user"),
                ("PW_PASS", "svc-password-123"),
                ("PW_ID", CLIENT_ID),
                ("PW_SECRET", CLIENT_SECRET),
            ],
            &[],
        )
        .await;
        // The workload's own token request is answered by the agent, before any rule.
        let stub_req = http::Request::post("/token")
            .header("host", ts.addr.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(
                "grant_type=client_credentials&client_id=placeholder",
            )))
            .unwrap();
        let r = http_request(s.agent.addr("http"), stub_req).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.text(),
            r#"{"access_token":"iron-proxy-stub-token","expires_in":3600,"token_type":"Bearer"}"#
        );
        assert_eq!(
            ts.count(),
            0,
            "the real endpoint is not contacted for a stub"
        );
        let a = s.agent.audit_where(|a| a["path"] == "/token");
        assert_eq!(a["action"], "stub");
        assert_eq!(a["stubbed_by"], "oauth_token");
        assert_eq!(annotations(&a, 0)["stubbed"], "oauth2_token_endpoint");

        // First matching entry wins: /special/* gets the password-grant token in its header.
        let r = s.get("/special/x").await;
        assert_eq!(r.echoed_header("x-api-token").unwrap(), "Token pw-token-1");
        let r = s.get("/other").await;
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            "Bearer cc-token-2"
        );
        assert_eq!(r.echoed_header("x-api-token"), None);
        let a = s.agent.audit_where(|a| a["path"] == "/special/x");
        assert_eq!(annotations(&a, 0)["grant"], "password");
        assert_eq!(
            annotations(&a, 0)["injected"],
            json!(["header:X-Api-Token"])
        );
        let reqs = ts.requests();
        assert_eq!(
            reqs[0].form_keys(),
            [
                "client_id",
                "client_secret",
                "grant_type",
                "password",
                "username"
            ]
        );
        s.assert_not_in_logs(&[
            CLIENT_SECRET,
            "svc-password-123",
            "pw-token-1",
            "cc-token-2",
        ]);
    });
}

#[test]
fn jwt_bearer_signed_assertion() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let private_pem = key.serialize_pem();
        let public_pem = key.public_key_pem();
        let decoding = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
        let checked = Arc::new(AtomicUsize::new(0));
        let c = checked.clone();
        let handler: Handler = Arc::new(move |r: &Recorded, n: usize| {
            if r.form("grant_type").as_deref()
                != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
                || r.form("client_id").is_some()
            {
                return oauth_error(400, "unsupported_grant_type");
            }
            let assertion = r.form("assertion").unwrap_or_default();
            let header = jsonwebtoken::decode_header(&assertion).unwrap();
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            v.set_audience(&["account-d.docusign.com"]);
            v.set_issuer(&["integration-key-123"]);
            v.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
            let Ok(data) = jsonwebtoken::decode::<Value>(&assertion, &decoding, &v) else {
                return oauth_error(400, "invalid_grant");
            };
            let cl = data.claims;
            let iat = cl["iat"].as_u64().unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            if header.kid.as_deref() != Some("key-id-7")
                || header.typ.as_deref() != Some("JWT")
                || cl["sub"] != "user-guid-42"
                || cl["scope"] != "signature impersonation"
                || cl["exp"].as_u64().unwrap() != iat + 3600
                || iat > now
                || now - iat > 60
            {
                return oauth_error(400, "invalid_grant");
            }
            c.fetch_add(1, Ordering::SeqCst);
            token_json(&format!("jwt-token-{n}"), 3600)
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![Transform::new(
            "oauth_token",
            json!({
                "tokens": [
                    {
                        "grant": "jwt_bearer",
                        "issuer": {"type": "env", "var": "DS_ISSUER"},
                        "subject": {"type": "env", "var": "DS_SUBJECT"},
                        "private_key": {"type": "file", "path": "{dir}/private.pem"},
                        "private_key_id": {"type": "env", "var": "DS_KID"},
                        "audience": "account-d.docusign.com",
                        "token_endpoint": ts.url("/oauth/token"),
                        "scopes": ["signature", "impersonation"],
                        "rules": [{"host": "localhost"}],
                    },
                ],
            }),
        )];
        let s = setup(
            t,
            &[
                ("DS_ISSUER", "integration-key-123"),
                ("DS_SUBJECT", "user-guid-42"),
                ("DS_KID", "key-id-7"),
            ],
            &[("private.pem", &private_pem)],
        )
        .await;
        let r = s.get("/restapi").await;
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            "Bearer jwt-token-1"
        );
        assert_eq!(
            checked.load(Ordering::SeqCst),
            1,
            "the endpoint verified the assertion"
        );
        let a = s.agent.audit_where(|a| a["path"] == "/restapi");
        assert_eq!(annotations(&a, 0)["grant"], "jwt_bearer");
        let key_body = private_pem.lines().nth(1).unwrap();
        s.assert_not_in_logs(&[key_body, "jwt-token-1"]);
    });
}

#[test]
fn mint_failures_fail_closed_with_one_audit_record() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler =
            Arc::new(|r: &Recorded, _| match r.form("client_id").as_deref() {
                Some("broken-upstream") => (503, "text/html", "<html>down</html>".into()),
                _ => oauth_error(401, "invalid_client"),
            });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![
            Transform::new(
                "oauth_token",
                json!({
                    "tokens": [
                        {
                            "grant": "client_credentials",
                            "client_id": {"type": "env", "var": "BAD_ID"},
                            "client_secret": {"type": "env", "var": "BAD_SECRET"},
                            "token_endpoint": ts.url("/token"),
                            "rules": [{"host": "localhost", "paths": ["/denied"]}],
                        },
                        {
                            "grant": "client_credentials",
                            "client_id": {"type": "env", "var": "MISSING_ID_VAR"},
                            "client_secret": {"type": "env", "var": "BAD_SECRET"},
                            "token_endpoint": ts.url("/token"),
                            "rules": [{"host": "localhost", "paths": ["/unresolved"]}],
                        },
                        {
                            "grant": "client_credentials",
                            "client_id": {"type": "env", "var": "BROKEN_ID"},
                            "client_secret": {"type": "env", "var": "BAD_SECRET"},
                            "token_endpoint": ts.url("/token"),
                            "require": false,
                            "rules": [{"host": "localhost", "paths": ["/optional"]}],
                        },
                    ],
                }),
            ),
        ];
        let s = setup(
            t,
            &[
                ("BAD_ID", "wrong-client"),
                ("BAD_SECRET", CLIENT_SECRET),
                ("BROKEN_ID", "broken-upstream"),
            ],
            &[],
        )
        .await;
        let r = s.get("/denied").await;
        assert_eq!(r.status, 502);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"error": "oauth_token failed to mint an access token", "grant": "client_credentials"})
        );
        let r = s.get("/unresolved").await;
        assert_eq!(r.status, 502);
        // require: false forwards without the header.
        let r = s.get("/optional").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echoed_header("authorization"), None);
        assert_eq!(s.origin.hits(), 1, "rejected requests never reach the origin");

        let a = s.agent.audits_where(1, |a| a["path"] == "/denied").remove(0);
        assert_eq!(a["action"], "reject");
        assert_eq!(a["status_code"], 502);
        assert_eq!(a["rejected_by"], "oauth_token");
        let an = annotations(&a, 0);
        assert_eq!(an["grant"], "client_credentials");
        assert_eq!(an["error"], "invalid_client");
        assert_eq!(an["rejected"], "token_unavailable");
        let a = s.agent.audits_where(1, |a| a["path"] == "/unresolved").remove(0);
        assert_eq!(annotations(&a, 0)["error"], "mint_failed");
        assert_eq!(annotations(&a, 0)["rejected"], "token_unavailable");
        let a = s.agent.audits_where(1, |a| a["path"] == "/optional").remove(0);
        assert_eq!(a["action"], "allow");
        assert_eq!(annotations(&a, 0)["error"], "token_endpoint_http_503");
        assert_eq!(annotations(&a, 0)["skipped"], "token_unavailable");
        // Exactly one audit record per request, no more.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(s.agent.audits().len(), 3);
        s.assert_not_in_logs(&[CLIENT_SECRET]);
    });
}

#[test]
fn rotated_credential_rebuilds_the_token_source() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| {
            let secret = r.form("client_secret").unwrap_or_default();
            token_json(&format!("tok-{n}-for-{secret}"), 3600)
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let t = vec![Transform::new(
            "oauth_token",
            json!({
                "tokens": [
                    {
                        "grant": "client_credentials",
                        "client_id": {"type": "env", "var": "ROT_ID"},
                        "client_secret": {"type": "file", "path": "{dir}/secret", "ttl": "300ms"},
                        "token_endpoint": ts.url("/token"),
                        "rules": [{"host": "localhost"}],
                    },
                ],
            }),
        )];
        let s = setup(t, &[("ROT_ID", CLIENT_ID)], &[("secret", "secret-v1")]).await;
        let r = s.get("/x").await;
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            "Bearer tok-1-for-secret-v1"
        );
        std::fs::write(s.dir.path().join("secret"), "secret-v2").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = s.get("/x").await;
            let h = r.echoed_header("authorization").unwrap();
            if h == "Bearer tok-2-for-secret-v2" {
                break;
            }
            assert_eq!(h, "Bearer tok-1-for-secret-v1");
            assert!(Instant::now() < deadline, "rotated secret never used");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(ts.count(), 2);
    });
}

#[test]
fn https_token_endpoint_trusted_through_ssl_cert_file() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let token_ca = TestCa::new("token-endpoint");
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| {
            if client_auth_ok(r, true) {
                token_json(&format!("tls-token-{n}"), 3600)
            } else {
                oauth_error(401, "invalid_client")
            }
        });
        let ts = TokenServer::start_tls(Duration::ZERO, handler, &token_ca).await;
        let t = vec![Transform::new(
            "oauth_token",
            json!({
                "tokens": [
                    {
                        "grant": "client_credentials",
                        "client_id": {"type": "env", "var": "TLS_ID"},
                        "client_secret": {"type": "env", "var": "TLS_SECRET"},
                        "token_endpoint": ts.https_url("/oauth/token"),
                        "rules": [{"host": "localhost", "paths": ["/api"]}],
                    },
                ],
            }),
        )];
        let s = setup_trusting(
            t,
            &[("TLS_ID", CLIENT_ID), ("TLS_SECRET", CLIENT_SECRET)],
            &[],
            Some(&token_ca),
        )
        .await;
        let r = s.get("/api").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            "Bearer tls-token-1"
        );
        assert_eq!(ts.count(), 1);
        s.assert_not_in_logs(&[CLIENT_SECRET, "tls-token-1"]);
    });
}

/// Token calls are the agent's own traffic but take the same way out as forwarded requests:
/// through `proxy.upstream_proxy` (iron-proxy's go through Go's proxy-aware default transport).
/// The endpoint's name exists only at the proxy, so a direct dial could not mint.
#[test]
fn token_calls_go_through_the_upstream_proxy() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| {
            if r.form("grant_type").as_deref() == Some("client_credentials")
                && client_auth_ok(r, true)
            {
                token_json(&format!("proxied-token-{n}"), 3600)
            } else {
                oauth_error(400, "invalid_client")
            }
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let proxy = TestProxy::connect(None, None).await;
        let endpoint = format!("http://idp.proxied.test:{}/token", ts.addr.port());
        let transforms = vec![Transform::new(
            "oauth_token",
            json!({
                "tokens": [
                    {
                        "grant": "client_credentials",
                        "client_id": {"type": "env", "var": "CC_ID"},
                        "client_secret": {"type": "env", "var": "CC_SECRET"},
                        "token_endpoint": endpoint,
                        "rules": [{"host": "localhost"}],
                    },
                ],
            }),
        )];
        let (origin, origin_ca) = localhost_origin().await;
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .envs(&[("CC_ID", CLIENT_ID), ("CC_SECRET", CLIENT_SECRET)])
            .start(|c, k| {
                AgentConfig::loopback(c, k)
                    .transforms(transforms)
                    .with(|c| {
                        c.proxy.upstream_proxy = Some(UpstreamProxy {
                            http_proxy: Some(format!("http://{}", proxy.addr)),
                            ..UpstreamProxy::default()
                        })
                    })
            });
        let s = Setup { m, origin };
        let r = s.get("/a").await;
        assert_eq!(
            r.echoed_header("authorization").as_deref(),
            Some("Bearer proxied-token-1"),
            "agent logs:\n{}",
            s.agent.logs()
        );
        let port = ts.addr.port();
        let targets: Vec<String> = proxy.seen().into_iter().map(|x| x.target).collect();
        assert_eq!(targets, vec![format!("idp.proxied.test:{port}")]);
        s.assert_not_in_logs(&[CLIENT_SECRET, "proxied-token-1"]);
    });
}

/// `upstream_deny_cidrs` governs where workloads may go, not the agent's own token calls: with
/// 127.0.0.0/8 denied (the default), the workload's request to the loopback origin is refused,
/// yet the token endpoint on 127.0.0.1 was reached and the token minted first.
#[test]
fn upstream_deny_cidrs_do_not_govern_token_calls() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let handler: Handler = Arc::new(|r: &Recorded, n: usize| {
            if client_auth_ok(r, true) {
                token_json(&format!("deny-token-{n}"), 3600)
            } else {
                oauth_error(400, "invalid_client")
            }
        });
        let ts = TokenServer::start(Duration::ZERO, handler).await;
        let transforms = vec![Transform::new(
            "oauth_token",
            json!({
                "tokens": [
                    {
                        "grant": "client_credentials",
                        "client_id": {"type": "env", "var": "CC_ID"},
                        "client_secret": {"type": "env", "var": "CC_SECRET"},
                        "token_endpoint": ts.url("/token"),
                        "rules": [{"host": "localhost"}],
                    },
                ],
            }),
        )];
        let (origin, origin_ca) = localhost_origin().await;
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .envs(&[("CC_ID", CLIENT_ID), ("CC_SECRET", CLIENT_SECRET)])
            .start(|c, k| {
                AgentConfig::loopback(c, k)
                    .transforms(transforms)
                    .with(|c| c.proxy.upstream_deny_cidrs = Some(vec!["127.0.0.0/8".into()]))
            });
        let s = Setup { m, origin };
        let r = s.get("/a").await;
        assert_ne!(
            r.status, 200,
            "the workload's loopback destination is denied"
        );
        assert_eq!(ts.count(), 1, "the token endpoint on 127.0.0.1 was reached");
        let a = s.agent.audit_where(|r| r["path"] == "/a");
        assert_eq!(
            annotations(&a, 0)["injected"],
            json!(["header:Authorization"])
        );
        s.assert_not_in_logs(&[CLIENT_SECRET, "deny-token-1"]);
    });
}
