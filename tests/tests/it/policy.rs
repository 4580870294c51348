//! Allowlist semantics through the running agent: domains, cidrs, method/path rules, warn
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! mode, globs, case and trailing dots; plus the request checks that run before the pipeline.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::client::get;
use iron_agent_tests::{
    Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request, https_request,
};
use serde_json::json;

fn agent_with(transforms: Vec<Transform>) -> (Agent, TestCa, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mitm = TestCa::new("mitm");
    let (c, k) = mitm.write(dir.path());
    let agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms(transforms)).start();
    (agent, mitm, dir)
}

fn req(method: &str, host: &str, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[test]
fn domains_globs_case_and_trailing_dot() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let p = o.port();
        let (agent, _ca, _d) =
            agent_with(vec![Transform::allowlist(&["*.LOCALHOST", "api.*.test"])]);
        let http = agent.addr("http");
        // `*.x` matches the apex too, case-insensitively, with or without a trailing dot.
        for host in [
            "localhost",
            "LocalHost",
            "localhost.",
            "sub.localhost",
            "a.b.localhost",
        ] {
            let r = http_request(http, get(&format!("{host}:{p}"), "/g")).await;
            assert_ne!(r.status, 403, "{host} should be allowed");
        }
        for host in ["notlocalhost", "localhost.evil", "api.test"] {
            let r = http_request(http, get(&format!("{host}:{p}"), "/g")).await;
            assert_eq!(r.status, 403, "{host} should be denied");
        }
    });
}

#[test]
fn star_allows_everything_and_cidrs_match_ip_literals() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let p = o.port();
        let (agent, _ca, _d) = agent_with(vec![Transform::new(
            "allowlist",
            json!({"cidrs": ["127.0.0.0/8"]}),
        )]);
        let http = agent.addr("http");
        assert_eq!(
            http_request(http, get(&format!("127.0.0.1:{p}"), "/"))
                .await
                .status,
            200
        );
        // A name is never resolved to match a CIDR entry.
        assert_eq!(
            http_request(http, get(&format!("localhost:{p}"), "/"))
                .await
                .status,
            403
        );
        drop(agent);

        let (agent, _ca, _d) = agent_with(vec![Transform::allowlist(&["*"])]);
        let r = http_request(agent.addr("http"), get(&format!("localhost:{p}"), "/any")).await;
        assert_eq!(r.status, 200);
    });
}

#[test]
fn method_and_path_rules() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let host = format!("localhost:{}", o.port());
        let (agent, _ca, _d) = agent_with(vec![Transform::new(
            "allowlist",
            json!({
                "rules": [
                    {"host": "localhost", "methods": ["post"], "paths": ["/v1/*", "/exact"]},
                    {"cidr": "10.0.0.0/8"},
                ],
            }),
        )]);
        let http = agent.addr("http");
        let cases = [
            ("POST", "/v1/chat/completions", 200),
            ("POST", "/v1", 200),
            ("POST", "/exact", 200),
            ("POST", "/exact/", 403),
            ("POST", "/v10", 403),
            ("GET", "/v1/models", 403),
            ("DELETE", "/exact", 403),
        ];
        for (m, path, want) in cases {
            let r = http_request(http, req(m, &host, path)).await;
            assert_eq!(r.status, want, "{m} {path}");
        }
    });
}

#[test]
fn warn_mode_allows_and_annotates() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _ca, _d) = agent_with(vec![Transform::new(
            "allowlist",
            json!({"warn": true, "domains": ["example.org"]}),
        )]);
        let r = http_request(
            agent.addr("http"),
            get(&format!("localhost:{}", o.port()), "/w"),
        )
        .await;
        assert_eq!(r.status, 200);
        let a = agent.audit_where(|a| a["path"] == "/w");
        assert_eq!(a["action"], "allow");
        assert_eq!(a["request_transforms"][0]["annotations"]["action"], "warn");
    });
}

#[test]
fn sni_host_mismatch_and_dot_segments_are_400_and_audited() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, mitm, _d) = agent_with(vec![Transform::allowlist(&["*"])]);
        // SNI names one host, Host header another: domain fronting.
        let r = https_request(
            agent.addr("https"),
            "localhost",
            mitm.client_config(),
            get("evil.example", "/front"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.text(), "SNI and Host header mismatch\n");
        let a = agent.audit_where(|a| a["path"] == "/front");
        assert_eq!(a["action"], "reject");
        assert_eq!(a["status_code"], 400);
        assert_eq!(a["reason"], "sni_host_mismatch");
        assert_eq!(a["sni"], "localhost");

        for (path, label) in [
            ("/a/../b", "raw"),
            ("/a/%2e%2e/b", "encoded"),
            ("/./x", "dot"),
        ] {
            let r = http_request(
                agent.addr("http"),
                get(&format!("localhost:{}", o.port()), path),
            )
            .await;
            assert_eq!(r.status, 400, "{label}");
            assert_eq!(r.text(), "path contains dot segments\n");
        }
        assert_eq!(o.hits(), 0);
        agent.audits_where(3, |a| a["reason"] == "dot_segments");
    });
}

#[test]
fn absolute_form_requests_and_missing_host() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _ca, _d) = agent_with(vec![Transform::allowlist(&["localhost"])]);
        // HTTP_PROXY-style absolute-form request.
        let uri = format!("http://localhost:{}/abs?q=1", o.port());
        let r = http_request(
            agent.addr("http"),
            http::Request::builder()
                .uri(&uri)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/abs?q=1");

        // HTTP/1.0 without Host.
        let mut s = tokio::net::TcpStream::connect(agent.addr("http"))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /nohost HTTP/1.0\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with("HTTP/1.0 400") || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
        assert!(text.ends_with("missing Host header\n"), "{text}");
        let a = agent.audit_where(|a| a["path"] == "/nohost");
        assert_eq!(a["reason"], "missing_host");
    });
}

#[test]
fn sse_events_arrive_one_by_one() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _ca, _d) = agent_with(vec![Transform::allowlist(&["localhost"])]);
        let tcp = tokio::net::TcpStream::connect(agent.addr("http"))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = sender
            .send_request(get(&format!("localhost:{}", o.port()), "/sse"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let start = Instant::now();
        let mut arrivals = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                arrivals.push((start.elapsed(), String::from_utf8_lossy(&data).into_owned()));
            }
        }
        let all: String = arrivals.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(all, "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n");
        // The first event must arrive well before the last one was produced (600 ms later).
        assert!(
            arrivals.len() >= 2,
            "events were buffered into one chunk: {arrivals:?}"
        );
        assert!(arrivals[0].0 < Duration::from_millis(400), "{arrivals:?}");
        let a = agent.audit_where(|a| a["path"] == "/sse");
        // duration covers the whole stream.
        assert!(a["duration_ms"].as_f64().unwrap() >= 500.0, "{a}");
    });
}

#[test]
fn upstream_header_timeout_is_502() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let (agent, _ca, _d) = agent_with(vec![Transform::allowlist(&["localhost"])]);
        let r = http_request(
            agent.addr("http"),
            get(&format!("localhost:{}", o.port()), "/slow"),
        )
        .await;
        assert_eq!(r.status, 502);
        let a = agent.audit_where(|a| a["path"] == "/slow");
        assert_eq!(a["action"], "error");
        assert_eq!(a["error"], "timeout awaiting response headers");
    });
}

#[test]
fn hop_by_hop_stripped_nothing_added_and_case_kept() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let o = Origin::start_raw().await;
        let (agent, _ca, _d) = agent_with(vec![
            Transform::allowlist(&["localhost"]),
        ]);
        let mut s = tokio::net::TcpStream::connect(agent.addr("http")).await.unwrap();
        let req = format!(
            "GET /h HTTP/1.1\r\nHost: localhost:{}\r\nX-Mixed-Case: 1\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\nProxy-Authorization: Basic c2VjcmV0\r\nKeep-Alive: timeout=5\r\n\r\n",
            o.port()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("X-Upstream-Case: Kept"), "response header case lost: {text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let head: serde_json::Value = serde_json::from_str(body).unwrap();
        let head = head["head"].as_str().unwrap();
        assert!(head.contains("\r\nX-Mixed-Case: 1"), "{head}");
        assert!(head.contains(&format!("\r\nHost: localhost:{}", o.port())), "{head}");
        for absent in ["x-drop-me", "proxy-authorization", "keep-alive:", "via:", "user-agent", "accept-encoding", "x-forwarded-for"] {
            assert!(!head.to_ascii_lowercase().contains(absent), "{absent} leaked: {head}");
        }
        // Nothing from the request headers is logged.
        assert!(!agent.logs().contains("c2VjcmV0"));
    });
}
