//! The `grpc` transform end to end: the real agent, the example TransformService server
//! (`iron_agent_tests::grpc_transform`, real gRPC over HTTP/2, plaintext, TLS and mTLS with CAs
//! made here) and an HTTPS echo origin. Covers what the service is sent, continue, reject with
//! and without a response, modified requests reaching the origin, modified and rejected
//! responses, annotations in the audit record, rules scoping, a down or failing service and a
//! deadline (fail closed: 502, nothing forwarded), TLS and mTLS, HTTP/2 and tunnels, config
//! errors naming the field (top level and `intercept.policies[i].transforms`), and the
//! documented example.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config;
mod example;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use iron_agent_tests::grpc_transform::{Call, ServerTls, TransformServer};
use iron_agent_tests::mitm::{MitmAgent, Setup};
use iron_agent_tests::{AgentConfig, TestCa, Transform, h2_handshake, tls_connect};
use serde_json::{Value, json};

/// A `grpc` transform named `policy` for `target`, sending both bodies, plus `extra` fields.
fn grpc(target: &str, extra: Value) -> Transform {
    let mut cfg = json!({
        "name": "policy",
        "target": target,
        "send_request_body": true,
        "send_response_body": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Transform::new("grpc", cfg)
}

async fn setup(transforms: Vec<Transform>) -> Setup {
    Setup::localhost(transforms, &[], &[]).await
}

fn post(host: &str, path: &str, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .header("content-type", "text/plain")
        .header("authorization", "Bearer client-token")
        .header("x-request-id", "r-1")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The `policy` trace of `phase` (`request_transforms` / `response_transforms`) in `rec`.
fn trace(rec: &Value, phase: &str) -> Value {
    rec[phase]
        .as_array()
        .unwrap_or_else(|| panic!("no {phase}: {rec}"))
        .iter()
        .find(|t| t["name"] == "policy")
        .unwrap_or_else(|| panic!("no policy trace in {phase}: {rec}"))
        .clone()
}

fn header<'a>(r: &'a iron_agent_proto::HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .get(name)
        .and_then(|v| v.values.first())
        .map(String::as_str)
}

mod iron_agent_proto {
    pub use iron_agent::transform::grpc::proto::*;
}

#[test]
fn continue_sends_the_request_and_response_and_records_annotations() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let svc = TransformServer::start(ServerTls::Plain).await;
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            grpc(&svc.target(), json!({})),
        ])
        .await;
        let host = s.host();
        let r = s.send(post(&host, "/hello?x=1", "hi there")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["body"], "hi there");
        assert_eq!(r.echo()["uri"], "/hello?x=1");

        let calls = svc.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        let Call::Request(first) = &calls[0] else {
            panic!("request phase first: {calls:?}")
        };
        let req = first.request.as_ref().unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, "/hello?x=1");
        assert_eq!(req.host, host);
        assert_eq!(req.body, b"hi there");
        assert!(
            req.remote_addr.starts_with("127.0.0.1:"),
            "{}",
            req.remote_addr
        );
        // Go-canonical names, as iron-proxy's http.Header sends them; Host is not a header.
        assert_eq!(header(req, "Content-Type"), Some("text/plain"));
        assert_eq!(header(req, "X-Request-Id"), Some("r-1"));
        assert_eq!(header(req, "Authorization"), Some("Bearer client-token"));
        assert!(!req.headers.contains_key("Host"), "{:?}", req.headers);
        assert_eq!(first.context.as_ref().unwrap().sni, "localhost");

        let Call::Response(second) = &calls[1] else {
            panic!("response phase second: {calls:?}")
        };
        assert_eq!(second.request.as_ref().unwrap().url, "/hello?x=1");
        let resp = second.response.as_ref().unwrap();
        assert_eq!(resp.status_code, 200);
        assert_eq!(
            resp.headers["Content-Type"].values,
            ["application/json"],
            "{:?}",
            resp.headers
        );
        let echoed: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(echoed["body"], "hi there");

        let rec = s.agent.audit_where(|a| a["path"] == "/hello");
        assert_eq!(rec["action"], "allow");
        let t = trace(&rec, "request_transforms");
        assert_eq!(t["action"], "allow");
        assert_eq!(t["annotations"]["policy.decision"], "continue");
        assert_eq!(t["annotations"]["policy.body_bytes"], "8");
        let t = trace(&rec, "response_transforms");
        assert_eq!(t["annotations"]["policy.decision"], "continue");
        assert_eq!(
            t["annotations"]["policy.body_bytes"],
            resp.body.len().to_string()
        );
    });
}

#[test]
fn headers_only_unless_bodies_are_asked_for_and_rules_scope_the_calls() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let svc = TransformServer::start(ServerTls::Plain).await;
        let cfg = json!({
            "send_request_body": false,
            "send_response_body": false,
            "rules": [{"host": "localhost", "paths": ["/scoped/*"]}],
        });
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            grpc(&svc.target(), cfg),
        ])
        .await;
        let host = s.host();
        let r = s.send(post(&host, "/elsewhere", "x")).await;
        assert_eq!(r.status, 200);
        assert!(svc.calls().is_empty(), "rules did not match: no call");
        let rec = s.agent.audit_where(|a| a["path"] == "/elsewhere");
        let t = trace(&rec, "request_transforms");
        assert!(
            t["annotations"].as_object().is_none_or(|a| a.is_empty()),
            "{t}"
        );

        let r = s.send(post(&host, "/scoped/a", "abc")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo()["body"], "abc", "body still forwarded");
        let calls = svc.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[0].request().body.is_empty(), "no body sent");
        let Call::Response(c) = &calls[1] else {
            panic!()
        };
        assert!(c.response.as_ref().unwrap().body.is_empty());
        assert_eq!(c.response.as_ref().unwrap().status_code, 200);
    });
}

#[test]
fn reject_with_the_services_response_or_the_default_403() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let svc = TransformServer::start(ServerTls::Plain).await;
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            grpc(&svc.target(), json!({})),
        ])
        .await;
        let host = s.host();
        let r = s.send(post(&host, "/reject/me", "{}")).await;
        assert_eq!(r.status, 451);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-policy"], "example");
        assert_eq!(r.text(), r#"{"error":"blocked by policy"}"#);
        let r = s.send(post(&host, "/deny/me", "{}")).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.headers["content-type"], "text/plain");
        assert!(r.body.is_empty());
        assert_eq!(s.origin.hits(), 0, "nothing forwarded");

        let rec = s.agent.audit_where(|a| a["path"] == "/reject/me");
        assert_eq!(rec["action"], "reject");
        assert_eq!(rec["status_code"], 451);
        assert_eq!(rec["rejected_by"], "policy");
        let t = trace(&rec, "request_transforms");
        assert_eq!(t["action"], "reject");
        assert_eq!(t["annotations"]["policy.decision"], "reject");
        let rec = s.agent.audit_where(|a| a["path"] == "/deny/me");
        assert_eq!(rec["status_code"], 403);
        assert_eq!(rec["rejected_by"], "policy");
        // Only the request phase ran.
        assert_eq!(svc.calls().len(), 2);
    });
}

#[test]
fn modified_request_reaches_the_origin_and_responses_are_modified_or_rejected() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let svc = TransformServer::start(ServerTls::Plain).await;
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            grpc(&svc.target(), json!({})),
        ])
        .await;
        let host = s.host();
        let r = s.send(post(&host, "/rewrite?a=1", "original body")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.echo();
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["uri"], "/rewritten/path?from=grpc");
        assert_eq!(echo["body"], "body from the policy");
        assert_eq!(r.echoed_header("x-policy").as_deref(), Some("rewritten"));
        assert_eq!(r.echoed_header("x-request-id").as_deref(), Some("r-1"));
        assert_eq!(r.echoed_header("authorization"), None, "headers replaced");
        assert_eq!(
            r.echoed_header("content-length").as_deref(),
            Some("20"),
            "framing follows the new body"
        );
        assert_eq!(r.echoed_header("host").as_deref(), Some(host.as_str()));
        // The response phase is sent the request as the service first saw it.
        let calls = svc.calls();
        assert_eq!(calls[1].request().url, "/rewrite?a=1");

        let r = s.send(post(&host, "/modify-response", "")).await;
        assert_eq!(r.status, 202);
        assert_eq!(r.headers["x-modified"], "yes");
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(r.headers["content-length"], "22");
        assert!(r.headers.get("x-origin").is_none(), "headers replaced");
        assert_eq!(r.text(), "replaced by the policy");
        let rec = s.agent.audit_where(|a| a["path"] == "/modify-response");
        assert_eq!(rec["status_code"], 202);
        assert_eq!(
            trace(&rec, "response_transforms")["annotations"]["policy.decision"],
            "modify"
        );

        let r = s.send(post(&host, "/reject-response", "")).await;
        assert_eq!(r.status, 409);
        assert_eq!(r.text(), "response blocked");
        assert_eq!(
            s.origin.hits(),
            3,
            "the origin answered; its answer was replaced"
        );
        let rec = s.agent.audit_where(|a| a["path"] == "/reject-response");
        assert_eq!(rec["rejected_by"], "policy");
        assert_eq!(rec["status_code"], 409);
        assert_eq!(trace(&rec, "response_transforms")["action"], "reject");
    });
}

#[test]
fn a_down_failing_or_slow_service_fails_closed() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        // A port with nothing listening: bound, then closed.
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let svc = TransformServer::start(ServerTls::Plain).await;
        let down_t = Transform::new(
            "grpc",
            json!({"name": "down", "target": down.to_string(), "rules": [{"host": "localhost", "paths": ["/down"]}]}),
        );
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            down_t,
            grpc(&svc.target(), json!({"timeout": "1s"})),
        ])
        .await;
        let host = s.host();

        let r = s.send(post(&host, "/down", "x")).await;
        assert_eq!(r.status, 502);
        let rec = s.agent.audit_where(|a| a["path"] == "/down");
        assert_eq!(rec["action"], "error");
        let err = rec["error"].as_str().unwrap();
        assert!(
            err.starts_with("transform down request: grpc TransformRequest to down: Unavailable"),
            "{err}"
        );

        let r = s.send(post(&host, "/fail", "x")).await;
        assert_eq!(r.status, 502);
        let rec = s.agent.audit_where(|a| a["path"] == "/fail");
        // The status code is audited; the service's message (free text) is not.
        assert_eq!(
            rec["error"],
            "transform policy request: grpc TransformRequest to policy: Internal"
        );
        assert!(!s.agent.logs().contains("policy engine exploded"));

        let started = Instant::now();
        let r = s.send(post(&host, "/slow", "x")).await;
        assert_eq!(r.status, 502);
        assert!(
            started.elapsed() < iron_agent_tests::grpc_transform::SLOW,
            "the deadline, not the service, ended the call"
        );
        let rec = s.agent.audit_where(|a| a["path"] == "/slow");
        assert_eq!(rec["action"], "error");
        assert!(
            rec["error"].as_str().unwrap().starts_with("transform policy request: grpc TransformRequest to policy: "),
            "{rec}"
        );
        assert_eq!(s.origin.hits(), 0, "nothing was forwarded");
        assert!(!s.agent.logs().contains("client-token"));
    });
}

/// `send_request_body` reads at most `proxy.max_request_body_bytes`: more is a 413 (decision 3),
/// never sent to the service or forwarded truncated.
#[test]
fn a_body_over_the_buffer_limit_is_refused_not_truncated() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let svc = TransformServer::start(ServerTls::Plain).await;
        let (origin, origin_ca) = iron_agent_tests::mitm::localhost_origin().await;
        let transforms = vec![grpc(&svc.target(), json!({}))];
        let m = MitmAgent::prepare(&[]).trust(&origin_ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .with(|c| c.proxy.max_request_body_bytes = Some(16))
                .transforms(transforms)
        });
        let host = format!("localhost:{}", origin.port());
        let r = m.send(post(&host, "/small", "0123456789")).await;
        assert_eq!(r.status, 200);
        let r = m.send(post(&host, "/big", &"x".repeat(17))).await;
        assert_eq!(r.status, 413);
        assert_eq!(origin.hits(), 1);
        let urls: Vec<String> = svc
            .calls()
            .iter()
            .map(|c| c.request().url.clone())
            .collect();
        assert_eq!(
            urls,
            ["/small", "/small"],
            "the oversized request never reached the service"
        );
        let rec = m.agent.audit_where(|a| a["path"] == "/big");
        assert_eq!(rec["rejected_by"], "policy");
    });
}

#[test]
fn a_restarted_service_is_reconnected() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TransformServer::serve(listener, ServerTls::Plain);
        let s = setup(vec![grpc(&svc.target(), json!({}))]).await;
        let host = s.host();
        assert_eq!(s.send(post(&host, "/one", "")).await.status, 200);
        svc.stop().await;
        assert_eq!(s.send(post(&host, "/two", "")).await.status, 502);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let svc = TransformServer::serve(listener, ServerTls::Plain);
        let mut status = 0;
        for _ in 0..20 {
            status = s.send(post(&host, "/three", "")).await.status;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(status, 200);
        assert!(!svc.calls().is_empty());
    });
}

#[test]
fn tls_and_mutual_tls_to_the_service() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = TestCa::new("grpc-server-ca");
        let client_ca = TestCa::new("grpc-client-ca");
        let other_ca = TestCa::new("someone-else");
        let ca_path = dir.path().join("grpc-ca.pem");
        std::fs::write(&ca_path, &server_ca.cert_pem).unwrap();
        let other_path = dir.path().join("other-ca.pem");
        std::fs::write(&other_path, &other_ca.cert_pem).unwrap();
        let (cert, key) = client_ca.write_server_cert(dir.path(), "grpc-client", &["iron-agent"]);

        let one_way = TransformServer::start(ServerTls::Tls(&server_ca)).await;
        let mutual = TransformServer::start(ServerTls::Mutual {
            server: &server_ca,
            clients: &client_ca,
        })
        .await;
        // One instance per case, each scoped to its own path.
        let instance = |name: &str, target: &str, tls: Value| {
            Transform::new(
                "grpc",
                json!({
                    "name": name,
                    "target": target,
                    "tls": tls,
                    "rules": [{"host": "localhost", "paths": [format!("/{name}")]}],
                }),
            )
        };
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            instance(
                "tls",
                &one_way.target(),
                json!({"enabled": true, "ca_cert": ca_path}),
            ),
            instance(
                "mtls",
                &mutual.target(),
                json!({"enabled": true, "ca_cert": ca_path, "cert": cert, "key": key}),
            ),
            instance(
                "mtls-without-cert",
                &mutual.target(),
                json!({"enabled": true, "ca_cert": ca_path}),
            ),
            instance(
                "untrusted-server",
                &one_way.target(),
                json!({"enabled": true, "ca_cert": other_path}),
            ),
            instance(
                "plaintext-to-tls",
                &one_way.target(),
                json!({"enabled": false}),
            ),
        ])
        .await;
        let host = s.host();
        assert_eq!(s.send(post(&host, "/tls", "a")).await.status, 200);
        assert_eq!(s.send(post(&host, "/mtls", "b")).await.status, 200);
        assert_eq!(
            one_way.calls().len(),
            2,
            "request and response phase over TLS"
        );
        assert_eq!(
            mutual.calls().len(),
            2,
            "request and response phase over mTLS"
        );
        for path in [
            "/mtls-without-cert",
            "/untrusted-server",
            "/plaintext-to-tls",
        ] {
            let r = s.send(post(&host, path, "c")).await;
            assert_eq!(r.status, 502, "{path}");
            let rec = s.agent.audit_where(|a| a["path"] == path);
            assert_eq!(rec["action"], "error", "{path}");
            let name = &path[1..];
            assert!(
                rec["error"].as_str().unwrap().starts_with(&format!(
                    "transform {name} request: grpc TransformRequest to {name}: "
                )),
                "{rec}"
            );
        }
        assert_eq!(one_way.calls().len(), 2);
        assert_eq!(mutual.calls().len(), 2);
        assert_eq!(s.origin.hits(), 2);
    });
}

async fn h2_post(m: &MitmAgent, port: u16, path: &str) -> (u16, Bytes) {
    let tcp = tokio::net::TcpStream::connect(m.agent.addr("https"))
        .await
        .unwrap();
    let tls = tls_connect(tcp, &m.mitm.client_config(), "localhost", &[b"h2"]).await;
    let mut sender = h2_handshake(tls).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{port}{path}"))
        .body(Full::new(Bytes::from_static(b"h2 body")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Opens a CONNECT tunnel to `target`, sends `request` inside, returns everything read back.
async fn tunnel_exchange(m: &MitmAgent, target: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = iron_agent_tests::connect_tunnel(m.agent.addr("tunnel"), target).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn runs_on_http2_and_inside_tunnels() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let svc = TransformServer::start(ServerTls::Plain).await;
        let (origin, origin_ca) = iron_agent_tests::mitm::localhost_origin().await;
        let plain = iron_agent_tests::Origin::start(iron_agent_tests::OriginKind::Http, None).await;
        let transforms = vec![
            Transform::allowlist(&["localhost"]),
            grpc(&svc.target(), json!({})),
        ];
        let m = MitmAgent::prepare(&[]).trust(&origin_ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .tunnel_listener()
                .transforms(transforms)
        });
        let (status, body) = h2_post(&m, origin.port(), "/h2/ok").await;
        assert_eq!(status, 200);
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["body"], "h2 body");
        let (status, body) = h2_post(&m, origin.port(), "/reject/h2").await;
        assert_eq!(status, 451);
        assert_eq!(&body[..], br#"{"error":"blocked by policy"}"#);
        let (status, body) = h2_post(&m, origin.port(), "/modify-response/h2").await;
        assert_eq!((status, &body[..]), (202, &b"replaced by the policy"[..]));

        let target = format!("localhost:{}", plain.port());
        let inner = |path: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
        };
        let resp = tunnel_exchange(&m, &target, &inner("/tunnel/ok")).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let resp = tunnel_exchange(&m, &target, &inner("/reject/tunnel")).await;
        assert!(resp.starts_with("HTTP/1.1 451"), "{resp}");
        assert!(resp.ends_with(r#"{"error":"blocked by policy"}"#), "{resp}");

        let urls: Vec<String> = svc
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Request(_)))
            .map(|c| c.request().url.clone())
            .collect();
        assert_eq!(
            urls,
            ["/h2/ok", "/reject/h2", "/modify-response/h2", "/tunnel/ok", "/reject/tunnel"]
        );
        // Inner requests carry the tunnel (target, and the setup's traces); others do not.
        let calls = svc.calls();
        let tunnel_call = calls
            .iter()
            .find_map(|c| match c {
                Call::Request(r) if r.request.as_ref().unwrap().url == "/tunnel/ok" => Some(r),
                _ => None,
            })
            .unwrap();
        let tunnel = tunnel_call.context.as_ref().unwrap().tunnel.as_ref().unwrap();
        assert_eq!(tunnel.target, target);
        let names: Vec<&str> = tunnel
            .request_transforms
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["allowlist"]);
        let Call::Request(h2_call) = &calls[0] else { panic!() };
        assert!(h2_call.context.as_ref().unwrap().tunnel.is_none());
        let rec = m.agent.audit_where(|a| a["path"] == "/reject/tunnel");
        assert_eq!(rec["rejected_by"], "policy");
        assert_eq!(rec["tunnel"]["target"], target);
        let rec = m.agent.audit_where(|a| a["path"] == "/reject/h2");
        assert_eq!(rec["rejected_by"], "policy");
    });
}
