//! Issue 15 item 6: the policy transforms in every place a pipeline runs, through the running
//! agent. The other files prove the top-level HTTP/1.1 pipeline (and, for `judge` and `grpc`,
//! HTTP/2 and plain HTTP inside a CONNECT tunnel); this one adds what they leave out:
//! MITM'd TLS inside CONNECT and SOCKS5 tunnels (HTTP/1.1 and HTTP/2 inside), MCP interception
//! and the gateway over HTTPS and HTTP/2, and `source_ip` / `allow_connect_without_header` on
//! HTTP/2 and inside tunnels, and config errors inside `intercept.policies[i].transforms`. Running
//! a policy's pipeline needs eBPF: `ebpf_policies`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iron_agent_tests::grpc_transform::{ServerTls, TransformServer};
use iron_agent_tests::mitm::{MitmAgent, localhost_origin};
use iron_agent_tests::{AgentConfig, TestCa, Transform, connect_tunnel, h2_handshake, tls_connect};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::judge::llm::{self, FakeLlm, KEY};
use crate::mcp::{McpServer, call, mcp_block};

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// One client connection to an agent, whatever carries it.
enum Client {
    H1(H1),
    H2(H2),
}

/// What came back: status, version, body.
struct Got {
    status: u16,
    version: http::Version,
    body: Bytes,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// TLS (MITM'd by the agent, SNI `localhost`) over `io`, then HTTP/2 if `h2` else HTTP/1.1.
    async fn over_tls<S>(io: S, m: &MitmAgent, h2: bool) -> Client
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tls_connect(io, &m.mitm.client_config(), "localhost", alpn).await;
        if h2 {
            return Client::H2(h2_handshake(tls).await);
        }
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client::H1(send)
    }

    /// The agent's HTTPS listener.
    async fn https(m: &MitmAgent, h2: bool) -> Client {
        let tcp = TcpStream::connect(m.agent.addr("https")).await.unwrap();
        Client::over_tls(tcp, m, h2).await
    }

    /// A CONNECT tunnel to `localhost:port`, TLS inside.
    async fn connect(m: &MitmAgent, port: u16, h2: bool) -> Client {
        let tcp = connect_tunnel(m.agent.addr("tunnel"), &format!("localhost:{port}")).await;
        Client::over_tls(tcp, m, h2).await
    }

    /// A SOCKS5 tunnel to `localhost:port` (domain address), TLS inside.
    async fn socks(m: &MitmAgent, port: u16, h2: bool) -> Client {
        let mut dom = vec![9u8];
        dom.extend_from_slice(b"localhost");
        let (tcp, code) = crate::tunnel::socks_connect(m.agent.addr("tunnel"), 3, &dom, port).await;
        assert_eq!(code, 0, "SOCKS5 setup refused");
        Client::over_tls(tcp, m, h2).await
    }

    /// `method path` to `localhost:port` with `headers` and `body`.
    async fn send(
        &mut self,
        method: &str,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Got {
        let mut b = http::Request::builder().method(method);
        b = match self {
            // HTTP/2 carries the authority in the URI (`:authority`).
            Client::H2(_) => b.uri(format!("https://localhost:{port}{path}")),
            Client::H1(_) => b.uri(path).header("host", format!("localhost:{port}")),
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = match self {
            Client::H1(s) => {
                s.ready().await.unwrap();
                tokio::time::timeout(Duration::from_secs(10), s.send_request(req)).await
            }
            Client::H2(s) => {
                tokio::time::timeout(Duration::from_secs(10), s.send_request(req)).await
            }
        }
        .expect("answered in time")
        .expect("a response");
        let (status, version) = (resp.status().as_u16(), resp.version());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Got {
            status,
            version,
            body,
        }
    }

    /// A JSON-RPC POST, as an MCP client sends it.
    async fn rpc(&mut self, port: u16, path: &str, msg: &Value) -> Got {
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        self.send("POST", port, path, &headers, &msg.to_string())
            .await
    }

    fn is_h2(&self) -> bool {
        matches!(self, Client::H2(_))
    }
}

/// The denial envelope `mcp_block` configures, for request `id`.
fn envelope(id: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32042, "message": "nope"}}).to_string()
}

fn tool_names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn mcp_policy_and_gateway_over_https_http2_and_mitmd_tunnels() {
    iron_agent_tests::runtime().block_on(async {
        let ca = TestCa::new("mcp origin");
        let srv = McpServer::start_tls(&ca).await;
        let upstream = McpServer::start().await;
        let gw = json!({"routes": [{
            "name": "real",
            "rules": [{"host": "localhost", "paths": ["/gw"]}],
            "upstream": format!("http://127.0.0.1:{}/gw/real", upstream.port),
        }]});
        let m = MitmAgent::prepare(&[]).trust(&ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .transforms([Transform::allowlist(&["localhost"])])
                .tunnel_listener()
                .with(|c| {
                    c.mcp = Some(mcp_block());
                    c.mcp_gateway = Some(gw);
                })
        });
        let p = srv.port;
        let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
        let mut forwarded = 0;
        let mut routed = 0;
        for (place, mut c) in [
            ("https h1", Client::https(&m, false).await),
            ("https h2", Client::https(&m, true).await),
            ("connect h1", Client::connect(&m, p, false).await),
            ("connect h2", Client::connect(&m, p, true).await),
            ("socks h1", Client::socks(&m, p, false).await),
            ("socks h2", Client::socks(&m, p, true).await),
        ] {
            let want = if c.is_h2() {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            // tools/call of a tool not listed: the envelope with the id, nothing forwarded.
            let g = c
                .rpc(p, "/mcp", &call(json!(place), "delete_repo", json!({})))
                .await;
            assert_eq!((g.status, g.version), (200, want), "{place}");
            assert_eq!(g.text(), envelope(json!(place)), "{place}");
            // An allowed call is forwarded and answered.
            let g = c
                .rpc(p, "/mcp", &call(json!(1), "search", json!({"q": place})))
                .await;
            assert!(g.text().contains("done"), "{place}: {}", g.text());
            forwarded += 1;
            // tools/list: filtered (JSON answer).
            let g = c.rpc(p, "/mcp", &list).await;
            let v: Value = serde_json::from_slice(&g.body).unwrap();
            assert_eq!(tool_names(&v), ["search", "create_issue"], "{place}");
            forwarded += 1;
            // The gateway routes the same client request to its upstream.
            let g = c.rpc(p, "/gw", &call(json!(2), "search", json!({}))).await;
            assert_eq!(g.status, 200, "{place}: {}", g.text());
            routed += 1;
            let seen = upstream.seen.all();
            assert_eq!(seen.len(), routed, "{place}");
            assert_eq!(seen[routed - 1].0, "/gw/real", "{place}");
            // A denied call is not routed either.
            let g = c
                .rpc(p, "/gw", &call(json!(3), "delete_repo", json!({})))
                .await;
            assert_eq!(g.text(), envelope(json!(3)), "{place}");
            assert_eq!(upstream.seen.all().len(), routed, "{place}");
        }
        assert_eq!(
            srv.seen.bodies().len(),
            forwarded,
            "denied calls never forwarded"
        );
        // Audit: inner tunnel requests carry the tunnel and the mcp section.
        let rec = m.agent.audit_where(|a| {
            a["tunnel"]["protocol"] == "socks5"
                && a["protocol"] == "h2"
                && a["path"] == "/mcp"
                && a["mcp"]["messages"][0]["reason"] == "tool_not_allowed"
        });
        assert_eq!(rec["tunnel"]["target"], format!("localhost:{p}"), "{rec}");
        assert_eq!(rec["action"], "reject");
        let recs = m.agent.audits_where(3, |a| {
            a["protocol"] == "h2" && a["mcp"]["gateway"]["route"] == "real"
        });
        let tunnels: Vec<&Value> = recs.iter().map(|r| &r["tunnel"]["protocol"]).collect();
        assert_eq!(tunnels, [&Value::Null, &json!("connect"), &json!("socks5")]);
        assert!(recs.iter().all(|r| r["action"] == "allow"));
    });
}

/// tools/list answered as SSE over HTTP/2 and inside a MITM'd tunnel: each event is filtered
/// and delivered while the server still holds the stream open.
#[test]
fn tools_list_sse_filtered_per_event_over_http2_and_in_a_tunnel() {
    iron_agent_tests::runtime().block_on(async {
        let ca = TestCa::new("mcp origin");
        let srv = McpServer::start_tls(&ca).await;
        let m = MitmAgent::prepare(&[]).trust(&ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .transforms([Transform::allowlist(&["localhost"])])
                .tunnel_listener()
                .with(|c| c.mcp = Some(mcp_block()))
        });
        let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
        for (place, h2) in [("https h2", true), ("connect h1", false)] {
            let sender = if h2 {
                Client::https(&m, true).await
            } else {
                Client::connect(&m, srv.port, false).await
            };
            let uri = format!("https://localhost:{}/sse", srv.port);
            let b = http::Request::post(if h2 { uri.as_str() } else { "/sse" })
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream");
            let b = if h2 {
                b
            } else {
                b.header("host", format!("localhost:{}", srv.port))
            };
            let req = b.body(Full::new(Bytes::from(list.to_string()))).unwrap();
            let resp = match sender {
                Client::H2(mut s) => s.send_request(req).await.unwrap(),
                Client::H1(mut s) => s.send_request(req).await.unwrap(),
            };
            assert_eq!(
                resp.headers()["content-type"],
                "text/event-stream",
                "{place}"
            );
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("result\"") || !got.ends_with(b"\n\n") {
                let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
                    .await
                    .unwrap_or_else(|_| panic!("{place}: first event before the stream ends"))
                    .unwrap()
                    .unwrap();
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            let text = String::from_utf8(got).unwrap();
            assert!(text.contains("\"create_issue\""), "{place}: {text}");
            assert!(!text.contains("delete_repo"), "{place}: {text}");
            srv.release.notify_one();
            let rest = body.collect().await.unwrap().to_bytes();
            assert!(
                String::from_utf8_lossy(&rest).contains("notifications/progress"),
                "{place}"
            );
        }
        let recs = m.agent.audits_where(2, |a| a["path"] == "/sse");
        for rec in &recs {
            let msgs = rec["mcp"]["messages"].as_array().unwrap();
            assert_eq!(msgs.len(), 3, "request, filtered list, progress: {rec}");
            assert_eq!(msgs[1]["filtered"], 1, "{rec}");
        }
        assert!(recs.iter().any(|r| r["protocol"] == "h2"));
        assert!(recs.iter().any(|r| r["tunnel"]["protocol"] == "connect"));
    });
}

fn judge(llm: &FakeLlm) -> Transform {
    Transform::new(
        "judge",
        json!({
            "name": "guard",
            "prompt": "Deny billing writes.",
            "rules": [{"host": "localhost", "methods": ["POST"]}],
            "provider": {"type": "anthropic", "model": "m", "api_key_env": "JUDGE_KEY",
                "base_url": llm.base_url()},
        }),
    )
}

fn grpc(svc: &TransformServer) -> Transform {
    Transform::new(
        "grpc",
        json!({"name": "policy", "target": svc.target(), "send_request_body": true,
            "send_response_body": true}),
    )
}

/// `judge` then `grpc` on requests inside MITM'd CONNECT and SOCKS5 tunnels, HTTP/1.1 and
/// HTTP/2 inside: allow, judge deny, grpc reject and a grpc-modified response in each.
#[test]
fn judge_and_grpc_inside_mitmd_connect_and_socks_tunnels() {
    iron_agent_tests::runtime().block_on(async {
        let llm = FakeLlm::start().await;
        let svc = TransformServer::start(ServerTls::Plain).await;
        let (origin, origin_ca) = localhost_origin().await;
        let transforms = vec![
            Transform::allowlist(&["localhost"]),
            judge(&llm),
            grpc(&svc),
        ];
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .env("JUDGE_KEY", KEY)
            .start(|c, k| {
                AgentConfig::loopback(c, k)
                    .tunnel_listener()
                    .transforms(transforms)
            });
        let p = origin.port();
        let mut places = Vec::new();
        for (place, mut c) in [
            ("connect-h1", Client::connect(&m, p, false).await),
            ("connect-h2", Client::connect(&m, p, true).await),
            ("socks-h1", Client::socks(&m, p, false).await),
            ("socks-h2", Client::socks(&m, p, true).await),
        ] {
            places.push(place);
            let g = c.send("POST", p, &format!("/ok/{place}"), &[], "{}").await;
            assert_eq!(g.status, 200, "{place}: {}", g.text());
            assert_eq!(
                serde_json::from_slice::<Value>(&g.body).unwrap()["body"],
                "{}"
            );
            let g = c
                .send("POST", p, &format!("/deny/{place}"), &[], "{}")
                .await;
            assert_eq!(g.status, 403, "{place}");
            let g = c
                .send("POST", p, &format!("/reject/{place}"), &[], "{}")
                .await;
            assert_eq!(g.status, 451, "{place}");
            assert_eq!(g.text(), r#"{"error":"blocked by policy"}"#, "{place}");
            let g = c
                .send("POST", p, &format!("/modify-response/{place}"), &[], "{}")
                .await;
            assert_eq!(
                (g.status, g.text().as_str()),
                (202, "replaced by the policy"),
                "{place}"
            );
        }
        // The judge saw every request (its deny ends the pipeline before grpc).
        let judged: Vec<String> = llm
            .calls()
            .iter()
            .map(|c| llm::envelope(c)["url"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(judged.len(), 16, "{judged:?}");
        let asked = svc
            .calls()
            .iter()
            .filter(|c| matches!(c, iron_agent_tests::grpc_transform::Call::Request(_)))
            .count();
        assert_eq!(asked, 12, "grpc asked for every request the judge allowed");
        for place in places {
            let protocol = if place.starts_with("socks") {
                "socks5"
            } else {
                "connect"
            };
            let rec = m
                .agent
                .audit_where(|a| a["path"] == format!("/deny/{place}"));
            assert_eq!(rec["rejected_by"], "guard", "{rec}");
            assert_eq!(rec["tunnel"]["protocol"], protocol, "{rec}");
            let h2 = if place.ends_with("h2") {
                "h2"
            } else {
                "http/1.1"
            };
            assert_eq!(rec["protocol"], h2, "{rec}");
            let rec = m
                .agent
                .audit_where(|a| a["path"] == format!("/reject/{place}"));
            assert_eq!(rec["rejected_by"], "policy", "{rec}");
            let rec = m
                .agent
                .audit_where(|a| a["path"] == format!("/modify-response/{place}"));
            let names: Vec<&str> = rec["response_transforms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert!(names.contains(&"policy"), "{rec}");
        }
        m.assert_not_in_logs(&[KEY]);
    });
}

/// `source_ip` and `secrets` with `require` + `allow_connect_without_header` on HTTP/2 and on
/// requests inside MITM'd tunnels. Tunnel setup runs only the allowlist (decision 9), so a
/// CONNECT opens without the header whether the flag is set or not; every inner request still
/// needs it.
#[test]
fn source_ip_and_required_secrets_on_http2_and_inside_tunnels() {
    iron_agent_tests::runtime().block_on(async {
        let (origin, origin_ca) = localhost_origin().await;
        let allow = Transform::new(
            "allowlist",
            json!({"rules": [
                {"host": "localhost", "source_ip": "127.0.0.1", "paths": ["/mine/*"]},
                {"host": "localhost", "source_ip": "10.9.0.0/16"},
            ]}),
        );
        for flag in [true, false] {
            let secrets = Transform::secrets(json!([{
                "source": {"type": "env", "var": "API_KEY"},
                "replace": {
                    "proxy_value": "proxy-key-1",
                    "match_headers": ["X-Api-Key"],
                    "require": true,
                    "allow_connect_without_header": flag,
                },
                "rules": [{"host": "localhost"}],
            }]));
            let transforms = vec![allow.clone(), secrets];
            let m = MitmAgent::prepare(&[])
                .trust(&origin_ca)
                .env("API_KEY", "real-key-778899")
                .start(|c, k| {
                    AgentConfig::loopback(c, k)
                        .tunnel_listener()
                        .transforms(transforms)
                });
            let p = origin.port();
            for (place, mut c) in [
                ("https-h2", Client::https(&m, true).await),
                ("connect-h1", Client::connect(&m, p, false).await),
                ("connect-h2", Client::connect(&m, p, true).await),
                ("socks-h1", Client::socks(&m, p, false).await),
            ] {
                let key = [("x-api-key", "proxy-key-1")];
                let g = c.send("GET", p, "/mine/keyed", &key, "").await;
                assert_eq!(g.status, 200, "{place} {flag}: {}", g.text());
                let echo: Value = serde_json::from_slice(&g.body).unwrap();
                let sent = iron_agent_tests::client::echo_header(&echo, "x-api-key");
                assert_eq!(sent, Some("real-key-778899"), "{place}");
                // Our address is not in the only rule that admits other paths.
                let g = c.send("GET", p, "/theirs", &key, "").await;
                assert_eq!(g.status, 403, "{place}");
                // No placeholder: `require` refuses it, tunnel or not.
                let g = c.send("GET", p, "/mine/bare", &[], "").await;
                assert_eq!(g.status, 403, "{place}");
            }
            let rec = m
                .agent
                .audit_where(|a| a["path"] == "/theirs" && a["tunnel"]["protocol"] == "socks5");
            assert_eq!(rec["protocol"], "http/1.1", "{rec}");
            assert_eq!(rec["rejected_by"], "allowlist", "{rec}");
            let recs = m.agent.audits_where(2, |a| {
                a["path"] == "/mine/bare" && a["tunnel"]["protocol"] == "connect"
            });
            assert!(
                recs.iter().all(|r| r["rejected_by"] == "secrets"),
                "{recs:?}"
            );
            let recs = m
                .agent
                .audits_where(2, |a| a["path"] == "/mine/bare" && a["protocol"] == "h2");
            assert!(
                recs.iter().all(|r| r["rejected_by"] == "secrets"),
                "{recs:?}"
            );
            // Every tunnel opened without the header (one setup record each, allowed).
            let setups = m.agent.audits_where(3, |a| a["method"] == "CONNECT");
            assert!(setups.iter().all(|r| r["action"] == "allow"), "{setups:?}");
            m.assert_not_in_logs(&["real-key-778899"]);
        }
    });
}

/// `judge` and `source_ip` inside `intercept.policies[i].transforms`: the same checks as at the
/// top level, errors named by the policy's path (`check-config`, no root needed).
#[test]
fn policy_pipeline_config_errors_name_the_policy_path() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("c").write(dir.path());
    let yaml = AgentConfig::loopback(&c, &k).to_yaml();
    let check = |transforms: &str| {
        let path = dir.path().join("c.yaml");
        let cfg = format!(
            "{yaml}intercept:\n  mode: ebpf\n  policies:\n    - uids: [4242]\n      transforms: {transforms}\n"
        );
        std::fs::write(&path, cfg).unwrap();
        let out = std::process::Command::new(iron_agent_tests::agent::agent_bin())
            .args(["check-config", "--no-host-checks", "--config"])
            .arg(&path)
            .env_clear()
            .env("K", "k")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let good = r#"[{name: allowlist, config: {rules: [{host: a.test, source_ip: 10.0.0.0/8}]}}, {name: judge, config: {name: j, prompt: p, rules: [{host: a.test}], provider: {type: openai, model: m, api_key_env: K}}}]"#;
    let (code, err) = check(good);
    assert_eq!(code, Some(0), "{err}");
    // A bad value is a parse error (reported alone); a missing key is a validation error.
    let (code, err) =
        check(r#"[{name: allowlist, config: {rules: [{host: a.test, source_ip: 10.0.0}]}}]"#);
    assert_eq!(code, Some(1), "{err}");
    let field = "intercept.policies[0].transforms[0].config.rules[0].source_ip";
    assert!(err.contains(field) && err.contains("\"10.0.0\""), "{err}");
    let (code, err) = check(&good.replace("api_key_env: K", "api_key_env: UNSET"));
    assert_eq!(code, Some(1), "{err}");
    let field = "intercept.policies[0].transforms[1].config.provider.api_key_env";
    assert!(err.contains(field), "{err}");
}
