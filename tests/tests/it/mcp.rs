//! MCP interception and the MCP gateway end to end: a Streamable HTTP MCP server started here
//! (JSON and SSE answers) behind the running agent's HTTP listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use iron_agent_tests::{Agent, AgentConfig, TestCa, Transform, http_request};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

mod gateway;
mod limits;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the fake MCP server received: (path and query, authorization header, body).
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<(String, String, String)>>>);

impl Seen {
    pub(crate) fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|s| s.2.clone()).collect()
    }
    pub(crate) fn all(&self) -> Vec<(String, String, String)> {
        self.0.lock().unwrap().clone()
    }
}

const TOOLS: &str =
    r#"[{"name":"search","description":"s"},{"name":"delete_repo"},{"name":"create_issue"}]"#;

/// A Streamable HTTP MCP server: answers each JSON-RPC request; `tools/list` in JSON on
/// `/mcp` and as an SSE stream on `/sse`, where the last event waits for `release`.
pub(crate) struct McpServer {
    pub(crate) port: u16,
    pub(crate) seen: Seen,
    pub(crate) release: Arc<Notify>,
}

impl McpServer {
    pub(crate) async fn start() -> McpServer {
        Self::start_with(None).await
    }

    /// The same server over TLS (HTTP/1.1) with a `localhost` certificate issued by `ca`.
    pub(crate) async fn start_tls(ca: &TestCa) -> McpServer {
        Self::start_with(Some(ca.acceptor(&["localhost"], &[b"http/1.1"]))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> McpServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), tls).await
    }

    /// On `bind`, over TLS with `tls` when given.
    pub(crate) async fn start_on(
        bind: std::net::SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> McpServer {
        let l = TcpListener::bind(bind).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Seen::default();
        let release = Arc::new(Notify::new());
        let (s, r) = (seen.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let (s, r, tls) = (s.clone(), r.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| serve(req, s.clone(), r.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(tcp), svc).await,
                        Some(a) => match a.accept(tcp).await {
                            Ok(t) => http.serve_connection(TokioIo::new(t), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        McpServer {
            port,
            seen,
            release,
        }
    }
}

fn answer(msg: &Value) -> Value {
    let id = msg["id"].clone();
    match msg["method"].as_str() {
        Some("tools/list") => {
            json!({"jsonrpc": "2.0", "id": id, "result": {"tools": serde_json::from_str::<Value>(TOOLS).unwrap()}})
        }
        // The arguments come back too (a large answer when the call was large).
        _ => {
            json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "done"}], "arguments": msg["params"]["arguments"]}})
        }
    }
}

async fn serve(
    req: http::Request<Incoming>,
    seen: Seen,
    release: Arc<Notify>,
) -> Result<http::Response<Body>, Infallible> {
    let pq = req.uri().path_and_query().unwrap().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let sse = req.uri().path() == "/sse";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    seen.0
        .lock()
        .unwrap()
        .push((pq.clone(), auth, text.clone()));
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let reply = match &v {
        Value::Array(a) => Value::Array(a.iter().map(answer).collect()),
        m => answer(m),
    };
    if sse {
        let first = format!(": keepalive\n\nevent: message\ndata: {reply}\n\n");
        let stream = async_stream(first, release);
        let resp = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
        return Ok(resp);
    }
    let mut reply = reply;
    if pq.starts_with("/gw") {
        reply["result"]["seen_path"] = json!(pq);
    }
    Ok(http::Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(reply.to_string()))))
        .unwrap())
}

/// The first event at once; a progress event only after `release` (the test proves it got
/// the first one before the server finished).
fn async_stream(
    first: String,
    release: Arc<Notify>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::unfold(0u8, move |state| {
        let (first, release) = (first.clone(), release.clone());
        async move {
            match state {
                0 => Some((Ok(Frame::data(Bytes::from(first))), 1)),
                1 => {
                    release.notified().await;
                    let last =
                        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
                    Some((Ok(Frame::data(Bytes::from_static(last.as_bytes()))), 2))
                }
                _ => None,
            }
        }
    })
}

pub(crate) fn mcp_block() -> Value {
    json!({
        "error": {"code": -32042, "message": "nope"},
        "servers": [{
            "name": "fake",
            "rules": [{"host": "localhost", "paths": ["/mcp", "/sse", "/gw"]}],
            "tools": [
                {"name": "search"},
                {"name": "create_issue", "when": [
                    {"path": "owner", "equals": "ironsh"},
                    {"path": "labels.0", "in": ["bug", "docs"]},
                    {"path": "title", "matches": "^\\[bot\\]"},
                ]},
            ],
        }],
    })
}

fn start_agent(dir: &std::path::Path, gateway: Option<Value>, env: &[(&str, &str)]) -> Agent {
    start_agent_with(dir, gateway, env, |_| {})
}

/// [`start_agent`] with one more change to the config (limits).
fn start_agent_with(
    dir: &std::path::Path,
    gateway: Option<Value>,
    env: &[(&str, &str)],
    change: impl FnOnce(&mut AgentConfig),
) -> Agent {
    let ca = TestCa::new("mitm");
    let (c, k) = ca.write(dir);
    let cfg = AgentConfig::loopback(&c, &k)
        .transforms([Transform::allowlist(&["localhost"])])
        .tunnel_listener()
        .with(|c| {
            c.mcp = Some(mcp_block());
            c.mcp_gateway = gateway;
        })
        .with(change);
    let mut b = Agent::with(&cfg);
    for (k, v) in env {
        b = b.env(k, *v);
    }
    b.start()
}

pub(crate) fn post(port: u16, path: &str, body: &Value) -> http::Request<Full<Bytes>> {
    http::Request::post(path)
        .header("host", format!("localhost:{port}"))
        .header("content-type", "application/json; charset=utf-8")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub(crate) fn call(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

fn mcp_audit(agent: &Agent, n: usize) -> Value {
    let all = agent.wait_audits(n);
    all[n - 1].clone()
}

#[test]
fn tools_call_allowed_denied_with_id_when_matchers_and_batches() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let agent = start_agent(dir.path(), None, &[]);
        let http = agent.addr("http");
        let p = srv.port;

        // Allowed: forwarded, the server's answer comes back.
        let r = http_request(http, post(p, "/mcp", &call(json!(1), "search", json!({"q": "x"})))).await;
        assert_eq!(r.status, 200);
        assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["result"]["content"][0]["text"], "done");
        let a = mcp_audit(&agent, 1);
        assert_eq!(a["action"], "allow");
        assert_eq!(a["mcp"]["server"], "fake");
        assert_eq!(a["mcp"]["messages"][0], json!({"direction": "request", "decision": "allow", "method": "tools/call", "tool": "search", "arguments": {"q": "x"}}));
        assert_eq!(a["mcp"]["messages"][1]["direction"], "response");
        assert_eq!(srv.seen.bodies().len(), 1);

        // Denied tool: the configured envelope with the request's id; upstream never sees it.
        let r = http_request(http, post(p, "/mcp", &call(json!("req-7"), "delete_repo", json!({})))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.text(), r#"{"jsonrpc":"2.0","id":"req-7","error":{"code":-32042,"message":"nope"}}"#);
        let a = mcp_audit(&agent, 2);
        assert_eq!(a["action"], "reject");
        assert_eq!(a["level"], "WARN");
        assert!(a.get("rejected_by").is_none());
        assert_eq!(a["mcp"]["messages"][0]["reason"], "tool_not_allowed");
        assert_eq!(srv.seen.bodies().len(), 1, "a denied call never reaches the server");

        // `when`: equals + in (dot path into an array) + unanchored-style regex all must hold.
        let good = json!({"owner": "ironsh", "labels": ["bug"], "title": "[bot] fix"});
        let r = http_request(http, post(p, "/mcp", &call(json!(3), "create_issue", good))).await;
        assert!(r.text().contains("done"), "{}", r.text());
        for bad in [
            json!({"owner": "evil", "labels": ["bug"], "title": "[bot] x"}),
            json!({"owner": "ironsh", "labels": ["feature"], "title": "[bot] x"}),
            json!({"owner": "ironsh", "labels": ["bug"], "title": "human"}),
            json!({"owner": "ironsh", "title": "[bot] x"}),
        ] {
            let r = http_request(http, post(p, "/mcp", &call(json!(4), "create_issue", bad))).await;
            assert_eq!(r.text(), r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32042,"message":"nope"}}"#);
        }
        let a = mcp_audit(&agent, 7);
        assert_eq!(a["mcp"]["messages"][0]["reason"], "argument_constraint");
        assert_eq!(srv.seen.bodies().len(), 2);

        // Batch: one denied message denies all, one error per id (notification: null).
        let batch = json!([
            call(json!(10), "search", json!({})),
            call(json!(11), "delete_repo", json!({})),
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]);
        let r = http_request(http, post(p, "/mcp", &batch)).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let ids: Vec<Value> = v.as_array().unwrap().iter().map(|e| e["id"].clone()).collect();
        assert_eq!(ids, vec![json!(10), json!(11), Value::Null]);
        assert_eq!(v[0]["error"]["code"], -32042);
        let a = mcp_audit(&agent, 8);
        let msgs = a["mcp"]["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "one entry per message: {a}");
        assert_eq!(msgs[1]["reason"], "tool_not_allowed");
        assert_eq!(srv.seen.bodies().len(), 2);
        // An allowed batch goes through whole.
        let ok = json!([call(json!(12), "search", json!({})), {"jsonrpc": "2.0", "id": 13, "method": "initialize", "params": {}}]);
        let r = http_request(http, post(p, "/mcp", &ok)).await;
        assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap().as_array().unwrap().len(), 2);
        assert_eq!(srv.seen.bodies().len(), 3);

        // Malformed JSON: denied with id null. Not JSON content: not policed.
        let mut bad = post(p, "/mcp", &json!(null));
        *bad.body_mut() = Full::new(Bytes::from_static(b"{oops"));
        let r = http_request(http, bad).await;
        assert_eq!(r.text(), r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32042,"message":"nope"}}"#);
        assert_eq!(mcp_audit(&agent, 10)["mcp"]["messages"][0]["reason"], "malformed_jsonrpc");
    });
}

#[test]
fn tools_list_filtered_in_json_and_per_sse_event_while_streaming() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let agent = start_agent(dir.path(), None, &[]);
        let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});

        let r = http_request(agent.addr("http"), post(srv.port, "/mcp", &list)).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let names: Vec<&str> = v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["search", "create_issue"]);
        assert_eq!(r.headers["content-length"], r.body.len().to_string().as_str());
        let a = mcp_audit(&agent, 1);
        assert_eq!(a["mcp"]["messages"][1], json!({"direction": "response", "decision": "filtered", "method": "tools/list", "filtered": 1}));

        // SSE: read the filtered first event while the server still holds its stream open.
        let tcp = TcpStream::connect(agent.addr("http")).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(post(srv.port, "/sse", &list)).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while !got.ends_with(b"\n\n") || !String::from_utf8_lossy(&got).contains("result") {
            let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("the first event arrives before the server finishes")
                .unwrap()
                .unwrap();
            if let Ok(d) = f.into_data() {
                got.extend_from_slice(&d);
            }
        }
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with(": keepalive\n\nevent: message\ndata: "), "{text}");
        assert!(text.contains("\"search\"") && text.contains("\"create_issue\""), "{text}");
        assert!(!text.contains("delete_repo"), "{text}");
        srv.release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n");
        let a = mcp_audit(&agent, 2);
        let msgs = a["mcp"]["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "request, filtered list, progress: {a}");
        assert_eq!(msgs[1]["filtered"], 1);
        assert_eq!(msgs[2]["method"], "notifications/progress");
    });
}

#[test]
fn gateway_routes_allowed_requests_with_credentials() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let upstream = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let gw = json!({"routes": [{
            "name": "real",
            "rules": [{"host": "localhost", "paths": ["/gw"]}],
            "upstream": format!("http://127.0.0.1:{}/gw/real?team=a", upstream.port),
            "credentials": [
                {"source": {"type": "env", "var": "GW_TOKEN"}, "inject": {"header": "authorization", "formatter": "Bearer {{ .Value }}"}},
                {"source": {"type": "env", "var": "GW_MISSING"}, "inject": {"query_param": "k"}, "require": false},
            ],
        }]});
        let agent = start_agent(dir.path(), Some(gw), &[("GW_TOKEN", "gw-secret-123")]);
        let mut req = post(srv.port, "/gw?x=1", &call(json!(1), "search", json!({})));
        *req.uri_mut() = "/gw?x=1".parse().unwrap();
        let r = http_request(agent.addr("http"), req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = upstream.seen.all();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "/gw/real?team=a&x=1");
        assert_eq!(seen[0].1, "Bearer gw-secret-123");
        assert!(srv.seen.all().is_empty(), "the client's host is not dialled");
        let a = mcp_audit(&agent, 1);
        assert_eq!(a["mcp"]["gateway"]["route"], "real");
        assert_eq!(a["mcp"]["gateway"]["credentials_injected"], json!(["GW_TOKEN:header:Authorization"]));
        // A denied call is not routed either.
        let r = http_request(agent.addr("http"), post(srv.port, "/gw", &call(json!(2), "delete_repo", json!({})))).await;
        assert!(r.text().contains("\"error\""));
        assert_eq!(upstream.seen.all().len(), 1);
        agent.assert_not_logged("gw-secret-123");
    });
}

fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    // The docs example names installed CA paths (/etc/iron-agent): judge the config only.
    let out = std::process::Command::new(iron_agent_tests::agent::agent_bin())
        .args([
            "check-config",
            "--no-host-checks",
            "--config",
            p.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_fields_and_the_docs_example_checks() {
    let bad = "mcp:\n  servers:\n    - name: a\n      rules: []\n      tools:\n        - name: t\n          when:\n            - path: x\n              equals: 1\n              in: [1]\n          typo: 1\nmcp_gateway:\n  routes:\n    - name: r\n      rules: [{host: x}]\n      upstream: \"ftp://x/#f\"\n      credentials:\n        - inject: {header: A, query_param: b}\n";
    let (code, err) = check_config(bad);
    assert_eq!(code, 1, "{err}");
    for want in [
        "mcp.servers[0].tools[0]",
        "typo",
        "mcp_gateway.routes[0].upstream",
        "mcp_gateway.routes[0].credentials[0].source",
        "mcp_gateway.routes[0].credentials[0].inject",
    ] {
        assert!(err.contains(want), "missing {want}: {err}");
    }
    let (code, err) = check_config("mcp_gateway:\n  routes:\n    - name: r\n      bogus: 1\n");
    assert_eq!(code, 1);
    assert!(err.contains("bogus"), "{err}");

    // docs/mcp.md's example, as written there.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/mcp.md")).unwrap();
    let example = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a yaml example in docs/mcp.md");
    assert!(
        !example.contains("sni-only"),
        "MCP needs to see requests:\n{example}"
    );
    let (code, err) = check_config(example);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("sni-only"), "{err}");
    // The same policy under sni-only is valid but cannot see HTTPS requests: a warning each.
    let tls = "tls:\n  ca_cert: /etc/iron-agent/ca.crt\n  ca_key: /etc/iron-agent/ca.key\n";
    assert!(example.starts_with(tls), "{example}");
    let sni = example.replacen(tls, "tls:\n  mode: sni-only\n", 1);
    let (code, err) = check_config(&sni);
    assert_eq!(code, 0, "{err}");
    for key in ["mcp", "mcp_gateway"] {
        let want = format!("warning: {key}: tls.mode=sni-only passes HTTPS through undecrypted");
        assert!(err.contains(&want), "missing {want:?}: {err}");
    }
}

#[test]
fn policy_applies_inside_a_connect_tunnel() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let agent = start_agent(dir.path(), None, &[]);
        let target = format!("localhost:{}", srv.port);
        let tcp = iron_agent_tests::client::connect_tunnel(agent.addr("tunnel"), &target).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let denied = call(json!(9), "delete_repo", json!({}));
        let resp = send
            .send_request(post(srv.port, "/mcp", &denied))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"jsonrpc":"2.0","id":9,"error":{"code":-32042,"message":"nope"}}"#
        );
        let allowed = call(json!(10), "search", json!({}));
        send.ready()
            .await
            .expect("the tunnel stays open after a denial");
        let resp = send
            .send_request(post(srv.port, "/mcp", &allowed))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("done"));
        assert_eq!(
            srv.seen.bodies().len(),
            1,
            "only the allowed call went upstream"
        );
        let inner = agent.audits_where(2, |a| a.get("tunnel").is_some() && a.get("mcp").is_some());
        assert_eq!(inner[0]["mcp"]["messages"][0]["reason"], "tool_not_allowed");
    });
}

/// A reload replaces the MCP tool policy: a tool allowed before is denied (and audited so) on
/// the next call, one denied before passes; SIGHUP puts the first policy back.
#[test]
fn reload_changes_the_tool_policy_for_the_next_call() {
    use crate::reload::{reload_agent, rewrite, with_management};
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("mcp reload CA").write(dir.path());
        let cfg = |tool: &str| {
            let mut m = mcp_block();
            m["servers"][0]["tools"] = json!([{"name": tool}]);
            AgentConfig::loopback(&c, &k)
                .transforms([Transform::allowlist(&["localhost"])])
                .with(|c| c.mcp = Some(m))
        };
        let agent = with_management(&cfg("search")).start();
        let (http, p) = (agent.addr("http"), srv.port);
        let denied = |id: u64| {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32042,"message":"nope"}}}}"#)
        };

        let r = http_request(http, post(p, "/mcp", &call(json!(1), "search", json!({})))).await;
        assert!(r.text().contains("done"), "{}", r.text());
        assert_eq!(mcp_audit(&agent, 1)["action"], "allow");
        let r = http_request(
            http,
            post(p, "/mcp", &call(json!(2), "delete_repo", json!({}))),
        )
        .await;
        assert_eq!(r.text(), denied(2));

        rewrite(&agent, &cfg("delete_repo"));
        let line = reload_agent(&agent, true).await;
        assert_eq!(line["msg"], "config reloaded", "{line}");
        assert_eq!(line["changed"], "mcp", "{line}");
        let r = http_request(http, post(p, "/mcp", &call(json!(3), "search", json!({})))).await;
        assert_eq!(r.text(), denied(3), "search is no longer allowed");
        let a = mcp_audit(&agent, 3);
        assert_eq!(a["action"], "reject");
        assert_eq!(a["mcp"]["messages"][0]["tool"], "search");
        assert_eq!(a["mcp"]["messages"][0]["decision"], "deny");
        assert_eq!(a["mcp"]["messages"][0]["reason"], "tool_not_allowed");
        let r = http_request(
            http,
            post(p, "/mcp", &call(json!(4), "delete_repo", json!({}))),
        )
        .await;
        assert!(r.text().contains("done"), "{}", r.text());
        assert_eq!(mcp_audit(&agent, 4)["action"], "allow");
        // The server saw the two allowed calls only.
        assert_eq!(srv.seen.bodies().len(), 2);

        rewrite(&agent, &cfg("search"));
        assert_eq!(reload_agent(&agent, false).await["msg"], "config reloaded");
        let r = http_request(http, post(p, "/mcp", &call(json!(5), "search", json!({})))).await;
        assert!(r.text().contains("done"), "{}", r.text());
        let r = http_request(
            http,
            post(p, "/mcp", &call(json!(6), "delete_repo", json!({}))),
        )
        .await;
        assert_eq!(r.text(), denied(6));
        assert_eq!(
            mcp_audit(&agent, 6)["mcp"]["messages"][0]["reason"],
            "tool_not_allowed"
        );
    });
}
