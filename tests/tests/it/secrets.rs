//! The `secrets` transform end to end: real TLS through the agent to an origin that echoes
//! what it received, and the audit log's account of it. No secret value may appear in logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::client::{get, get_with as req};
use iron_agent_tests::mitm::Setup;
use iron_agent_tests::{
    Agent, AgentConfig, Origin, TestCa, Transform, http_request, https_request,
};
use serde_json::json;

const OPENAI: &str = "sk-real-openai-0123456789";
const INTERNAL: &str = "int-real-token-9876";

async fn setup(transforms: Vec<Transform>, env: &[(&str, &str)], files: &[(&str, &str)]) -> Setup {
    Setup::localhost(transforms, env, files).await
}

fn quickstart() -> Vec<Transform> {
    vec![
        Transform::allowlist(&["localhost"]),
        Transform::secrets(json!([
            {
                "source": {"type": "env", "var": "OPENAI_API_KEY"},
                "replace": {
                    "proxy_value": "proxy-openai-abc123",
                    "match_headers": ["Authorization"],
                    "match_query": true,
                },
                "rules": [{"host": "localhost"}],
            },
            {
                "source": {"type": "env", "var": "INTERNAL_TOKEN"},
                "replace": {"proxy_value": "proxy-internal-tok", "match_headers": []},
                "rules": [{"host": "localhost"}],
            },
        ])),
    ]
}

#[test]
fn quickstart_five_requests() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup(
            quickstart(),
            &[("OPENAI_API_KEY", OPENAI), ("INTERNAL_TOKEN", INTERNAL)],
            &[],
        )
        .await;
        let host = s.host();
        // 1. allowed
        let r = s.send(get(&host, "/get")).await;
        assert_eq!(r.status, 200);
        // 2. blocked: a host not on the allowlist (the SNI matches it, so the 403 is policy)
        let r = https_request(
            s.agent.addr("https"),
            "example.com",
            s.mitm.client_config(),
            get("example.com", "/"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 403);
        // 3. Authorization swap
        let r = s
            .send(req(
                &host,
                "/headers",
                &[("authorization", "Bearer proxy-openai-abc123")],
            ))
            .await;
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            format!("Bearer {OPENAI}")
        );
        // 4. any header
        let r = s
            .send(req(
                &host,
                "/headers",
                &[("x-internal", "proxy-internal-tok")],
            ))
            .await;
        assert_eq!(r.echoed_header("x-internal").unwrap(), INTERNAL);
        // 5. query
        let r = s
            .send(get(&host, "/get?token=proxy-openai-abc123&q=hello"))
            .await;
        assert_eq!(r.echo()["uri"], format!("/get?q=hello&token={OPENAI}"));

        let a = s.agent.audit_where(|a| {
            a["path"] == "/headers"
                && a["request_transforms"][1]["annotations"]["swapped"][0]["secret"]
                    == "OPENAI_API_KEY"
        });
        assert_eq!(
            a["request_transforms"][1]["annotations"]["swapped"][0]["locations"][0],
            "header:Authorization"
        );
        let a = s.agent.audit_where(|a| {
            a["path"] == "/headers"
                && a["request_transforms"][1]["annotations"]["swapped"][0]["secret"]
                    == "INTERNAL_TOKEN"
        });
        assert_eq!(
            a["request_transforms"][1]["annotations"]["swapped"][0]["locations"][0],
            "header:X-Internal"
        );
        let a = s.agent.audit_where(|a| {
            a["path"] == "/get" && a["request_transforms"][1]["annotations"]["swapped"].is_array()
        });
        assert_eq!(
            a["request_transforms"][1]["annotations"]["swapped"][0]["locations"][0],
            "query:token"
        );
        let blocked = s.agent.audit_where(|a| a["host"] == "example.com");
        assert_eq!(blocked["rejected_by"], "allowlist");
        s.assert_not_in_logs(&[OPENAI, INTERNAL]);
    });
}

#[test]
fn basic_auth_regex_headers_require_and_body() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let t = vec![Transform::secrets(json!([
            {
                "source": {"type": "env", "var": "GH_TOKEN"},
                "replace": {
                    "proxy_value": "ph-gh",
                    "match_headers": ["Authorization", "/^x-token-.*$/"],
                    "match_body": true,
                    "require": true,
                },
                "rules": [{"host": "localhost", "paths": ["/gh/*"]}],
            },
        ]))];
        let s = setup(t, &[("GH_TOKEN", "ghp_realvalue")], &[]).await;
        let host = s.host();
        let b64 = |x: &str| base64::engine::general_purpose::STANDARD.encode(x);
        let r = s
            .send(req(
                &host,
                "/gh/basic",
                &[(
                    "authorization",
                    &format!("Basic {}", b64("x-access-token:ph-gh")),
                )],
            ))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            format!("Basic {}", b64("x-access-token:ghp_realvalue"))
        );

        let r = s
            .send(req(
                &host,
                "/gh/re",
                &[("x-token-auth", "ph-gh"), ("x-other", "ph-gh")],
            ))
            .await;
        assert_eq!(r.echoed_header("x-token-auth").unwrap(), "ghp_realvalue");
        assert_eq!(
            r.echoed_header("x-other").unwrap(),
            "ph-gh",
            "headers outside match_headers are untouched"
        );

        let body_req = http::Request::builder()
            .method("POST")
            .uri("/gh/body")
            .header("host", &host)
            .body(Full::new(Bytes::from_static(b"{\"token\":\"ph-gh\"}")))
            .unwrap();
        let r = s.send(body_req).await;
        assert_eq!(r.echo()["body"], "{\"token\":\"ghp_realvalue\"}");

        // require: the placeholder is in no scanned place → 403, never forwarded.
        let before = s.origin.hits();
        let r = s
            .send(req(
                &host,
                "/gh/none",
                &[("authorization", "Bearer something-else")],
            ))
            .await;
        assert_eq!(r.status, 403);
        assert_eq!(s.origin.hits(), before);
        let a = s.agent.audit_where(|a| a["path"] == "/gh/none");
        assert_eq!(a["rejected_by"], "secrets");
        assert_eq!(
            a["request_transforms"][0]["annotations"]["rejected"],
            "GH_TOKEN"
        );
        // Outside the rules nothing is required.
        let r = s.send(get(&host, "/elsewhere")).await;
        assert_eq!(r.status, 200);
        s.assert_not_in_logs(&["ghp_realvalue"]);
    });
}

#[test]
fn inject_formatter_query_json_key_and_header_allowlist_after() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let t = vec![
            Transform::secrets(json!([
                {
                    "source": {"type": "file", "path": "{dir}/creds.json", "json_key": "github"},
                    "inject": {
                        "header": "Authorization",
                        "formatter": "{{ base64 \"x-access-token:\" .Value }}",
                    },
                    "rules": [{"host": "localhost", "paths": ["/inject"]}],
                },
                {
                    "source": {"type": "env", "var": "MAPS_KEY"},
                    "inject": {"query_param": "key"},
                    "rules": [{"host": "localhost", "paths": ["/maps"]}],
                },
            ])),
            Transform::new("header_allowlist", json!({"headers": ["Authorization"]})),
        ];
        let s = setup(
            t,
            &[("MAPS_KEY", "maps-real-key")],
            &[("creds.json", r#"{"github":"gh-json-value","other":1}"#)],
        )
        .await;
        let host = s.host();
        let r = s
            .send(req(
                &host,
                "/inject",
                &[
                    ("authorization", "Bearer client-supplied"),
                    ("x-dropped", "1"),
                ],
            ))
            .await;
        let expect =
            base64::engine::general_purpose::STANDARD.encode("x-access-token:gh-json-value");
        assert_eq!(
            r.echoed_header("authorization").unwrap(),
            expect,
            "inject overwrites the client's value"
        );
        assert!(r.echoed_header("x-dropped").is_none());
        let r = s.send(get(&host, "/maps?key=placeholder&z=1")).await;
        assert_eq!(r.echo()["uri"], "/maps?key=maps-real-key&z=1");
        let a = s.agent.audit_where(|a| a["path"] == "/inject");
        assert_eq!(
            a["request_transforms"][0]["annotations"]["injected"][0]["secret"],
            format!("{}/creds.json", s.dir.path().display())
        );
        assert_eq!(
            a["request_transforms"][0]["annotations"]["injected"][0]["locations"][0],
            "header:Authorization"
        );
        let a = s.agent.audit_where(|a| a["path"] == "/maps");
        assert_eq!(
            a["request_transforms"][0]["annotations"]["injected"][0]["locations"][0],
            "query:key"
        );
        s.assert_not_in_logs(&["gh-json-value", "maps-real-key", &expect]);
    });
}

#[test]
fn file_source_ttl_refresh_and_unavailable_sources() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let t = vec![Transform::secrets(json!([
            {
                "source": {"type": "file", "path": "{dir}/token", "ttl": "1s"},
                "replace": {"proxy_value": "ph-file"},
            },
            {
                "source": {"type": "env", "var": "NOT_SET_ANYWHERE"},
                "replace": {"proxy_value": "ph-missing"},
                "rules": [{"host": "localhost", "paths": ["/soft"]}],
            },
            {
                "source": {"type": "env", "var": "NOT_SET_EITHER"},
                "inject": {"header": "X-Key", "require": true},
                "rules": [{"host": "localhost", "paths": ["/hard"]}],
            },
        ]))];
        let s = setup(t, &[], &[("token", "version-one")]).await;
        let host = s.host();
        let r = s.send(req(&host, "/f", &[("x-t", "ph-file")])).await;
        assert_eq!(r.echoed_header("x-t").unwrap(), "version-one");
        std::fs::write(s.dir.path().join("token"), "version-two").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = s.send(req(&host, "/f", &[("x-t", "ph-file")])).await;
            if r.echoed_header("x-t").unwrap() == "version-two" {
                break;
            }
            assert!(Instant::now() < deadline, "rotated value not picked up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Unavailable without require: placeholder goes out, annotated.
        let r = s.send(req(&host, "/soft", &[("x-t", "ph-missing")])).await;
        assert_eq!(r.echoed_header("x-t").unwrap(), "ph-missing");
        let a = s.agent.audit_where(|a| a["path"] == "/soft");
        assert_eq!(
            a["request_transforms"][0]["annotations"]["secret_unavailable"][0],
            "NOT_SET_ANYWHERE"
        );
        // Unavailable with require: fail closed.
        let r = s.send(get(&host, "/hard")).await;
        assert_eq!(r.status, 403);
        let a = s.agent.audit_where(|a| a["path"] == "/hard");
        assert_eq!(
            a["request_transforms"][0]["annotations"]["reject_reason"],
            "secret_unavailable"
        );
        s.assert_not_in_logs(&["version-one", "version-two"]);
    });
}

#[test]
fn injected_header_keeps_configured_casing_on_http1() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let o = Origin::start_raw().await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("m").write(dir.path());
        let t = Transform::secrets(json!([
            {"source": {"type": "env", "var": "API_KEY"}, "inject": {"header": "X-API-Key"}},
        ]));
        let agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms([t]))
            .env("API_KEY", "cased-real")
            .start();
        let mut s = tokio::net::TcpStream::connect(agent.addr("http")).await.unwrap();
        let raw = format!("GET /c HTTP/1.1\r\nHost: localhost:{}\r\nx-api-key: placeholder\r\nX-Client: 1\r\nConnection: close\r\n\r\n", o.port());
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let head: serde_json::Value = serde_json::from_str(body).unwrap();
        let head = head["head"].as_str().unwrap();
        assert!(head.contains("\r\nX-API-Key: cased-real"), "{head}");
        assert!(!head.contains("placeholder"), "{head}");
        assert!(head.contains("\r\nX-Client: 1"), "{head}");
        let _ = http_request; // plain-HTTP helper also available
    });
}

/// A reload re-resolves every secret source: a `file` source without `ttl` (otherwise read
/// once) serves the file's new content from the first request after SIGHUP or
/// `POST /v1/reload`, and not before. An `env` source reads the agent's environment again,
/// which stays the one the process started with (docs/sources/env.md): its value is unchanged.
/// Values are compared, never printed.
#[test]
fn reload_re_resolves_a_file_secret_and_env_keeps_the_start_value() {
    use crate::reload::{reload_agent, with_management};
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("reload secrets CA").write(dir.path());
        let origin = Origin::start(iron_agent_tests::OriginKind::Http, None).await;
        let token = dir.path().join("token");
        std::fs::write(&token, "file-value-one").unwrap();
        let cfg = AgentConfig::loopback(&c, &k).transforms([
            Transform::allowlist(&["localhost"]),
            Transform::secrets(json!([
                {
                    "source": {"type": "file", "path": token.to_str().unwrap()},
                    "inject": {"header": "X-File-Key"},
                    "rules": [{"host": "localhost"}],
                },
                {
                    "source": {"type": "env", "var": "IRON_RELOAD_ENV_SECRET"},
                    "inject": {"header": "X-Env-Key"},
                    "rules": [{"host": "localhost"}],
                },
            ])),
        ]);
        let agent = with_management(&cfg)
            .env("IRON_RELOAD_ENV_SECRET", "env-value-one")
            .start();
        let host = format!("localhost:{}", origin.port());
        // Whether the next request arrives with these two header values.
        let carries = |file: &'static str, env: &'static str| {
            let (http, host) = (agent.addr("http"), host.clone());
            async move {
                let r = http_request(http, get(&host, "/s")).await;
                assert_eq!(r.status, 200);
                (
                    r.echoed_header("x-file-key").as_deref() == Some(file),
                    r.echoed_header("x-env-key").as_deref() == Some(env),
                )
            }
        };
        assert_eq!(
            carries("file-value-one", "env-value-one").await,
            (true, true)
        );

        // Rotated on disk: no ttl, so nothing changes until a reload.
        std::fs::write(&token, "file-value-two").unwrap();
        assert_eq!(
            carries("file-value-one", "env-value-one").await,
            (true, true)
        );
        let line = reload_agent(&agent, false).await;
        assert_eq!(line["msg"], "config reloaded", "{line}");
        assert_eq!(line["changed"], "nothing (secret sources re-resolved)");
        assert_eq!(
            carries("file-value-two", "env-value-one").await,
            (true, true),
            "after SIGHUP: the file's new value, the env value as at start"
        );

        // Again by the management API.
        std::fs::write(&token, "file-value-three").unwrap();
        let line = reload_agent(&agent, true).await;
        assert_eq!(line["msg"], "config reloaded", "{line}");
        assert_eq!(
            carries("file-value-three", "env-value-one").await,
            (true, true),
            "after POST /v1/reload"
        );
        for v in [
            "file-value-one",
            "file-value-two",
            "file-value-three",
            "env-value-one",
        ] {
            agent.assert_not_logged(v);
        }
    });
}
