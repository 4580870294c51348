//! Request-shaping transforms through the running agent: body limits (413), body_capture,
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! header_allowlist and annotate, and what the upstream and the audit log see.

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request};
use serde_json::json;

/// The agent with `transforms`; `max_body` is `proxy.max_request_body_bytes`.
fn agent_with(transforms: Vec<Transform>, max_body: Option<i64>) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("m").write(dir.path());
    let cfg = AgentConfig::loopback(&c, &k)
        .transforms(transforms)
        .with(|c| c.proxy.max_request_body_bytes = max_body);
    (Agent::with(&cfg).start(), dir)
}

fn post(host: &str, path: &str, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn capture() -> Vec<Transform> {
    vec![
        Transform::allowlist(&["localhost"]),
        Transform::new(
            "body_capture",
            json!({"max_request_body_bytes": 8, "rules": [{"host": "localhost", "paths": ["/cap/*"]}]}),
        ),
    ]
}

#[test]
fn body_over_the_limit_is_413_and_never_forwarded() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _d) = agent_with(capture(), Some(1024));
        let host = format!("localhost:{}", o.port());
        let r = http_request(
            agent.addr("http"),
            post(&host, "/cap/big", vec![b'a'; 4096]),
        )
        .await;
        assert_eq!(r.status, 413);
        assert_eq!(
            o.hits(),
            0,
            "an oversized body must not reach the upstream, not even truncated"
        );
        let a = agent.audit_where(|a| a["path"] == "/cap/big");
        assert_eq!(a["action"], "reject");
        assert_eq!(a["status_code"], 413);
        assert_eq!(a["rejected_by"], "body_capture");
        assert_eq!(
            a["request_transforms"][1]["annotations"]["rejected"],
            "body_too_large"
        );

        // A large body no transform needs streams through untouched, whatever its size.
        let r = http_request(
            agent.addr("http"),
            post(&host, "/other", vec![b'b'; 200_000]),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo()["body"].as_str().unwrap().len(), 200_000);
    });
}

#[test]
fn body_capture_records_a_capped_body() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _d) = agent_with(capture(), None);
        let host = format!("localhost:{}", o.port());
        let r = http_request(
            agent.addr("http"),
            post(&host, "/cap/x", b"hello world, long body".to_vec()),
        )
        .await;
        assert_eq!(r.status, 200);
        // The upstream still gets the whole body.
        assert_eq!(r.echo()["body"], "hello world, long body");
        let a = agent.audit_where(|a| a["path"] == "/cap/x");
        assert_eq!(a["body_capture"]["request_body"], "hello wo");
        assert_eq!(a["body_capture"]["request_body_truncated"], true);
        assert_eq!(
            a["request_transforms"][1]["annotations"]["captured_bytes"],
            8
        );
    });
}

#[test]
fn header_allowlist_strips_and_annotate_records() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _d) = agent_with(
            vec![
                Transform::new(
                    "annotate",
                    json!({
                        "annotations": [{"rules": [{"host": "localhost"}], "headers": ["x-request-id"]}],
                    }),
                ),
                Transform::new(
                    "header_allowlist",
                    json!({"headers": ["Content-Type", "/^x-trace-.*$/", "x-request-id"]}),
                ),
            ],
            None,
        );
        let host = format!("localhost:{}", o.port());
        let req = http::Request::builder()
            .uri("/h")
            .header("host", &host)
            .header("x-request-id", "req-42")
            .header("x-trace-span", "s1")
            .header("cookie", "session=abc")
            .header("x-other", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = http_request(agent.addr("http"), req).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echoed_header("x-trace-span").as_deref(), Some("s1"));
        assert_eq!(r.echoed_header("x-request-id").as_deref(), Some("req-42"));
        assert!(r.echoed_header("cookie").is_none());
        assert!(r.echoed_header("x-other").is_none());
        assert_eq!(r.echoed_header("host").as_deref(), Some(host.as_str()));
        let a = agent.audit_where(|a| a["path"] == "/h");
        assert_eq!(a["request_transforms"][0]["annotations"]["header:X-Request-Id"], "req-42");
        let stripped = &a["request_transforms"][1]["annotations"]["stripped_headers"];
        assert_eq!(stripped, &serde_json::json!(["Cookie", "X-Other"]));
        assert!(!agent.logs().contains("session=abc"));
    });
}
