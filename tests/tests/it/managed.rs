//! Managed mode against the real `iron-control` (SQLite in a temp dir) and, for answers the
//! real server never sends, a small fake speaking the same protocol: a synced secret injected
//! on the way to a local origin, a grant change reaching the agent within one poll interval
//! with no failed request, revocation (exit 1), a control plane that is down at startup
//! (agent up, not ready, then ready), a bad answer keeping the old state, the management
//! endpoints, and no token in any log line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::client::{Reply, get};
use iron_agent_tests::config::Tls;
use iron_agent_tests::control::Control;
use iron_agent_tests::{
    Agent, AgentBuilder, AgentConfig, Origin, OriginKind, TestCa, http_request, https_request,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY_VAR: &str = "IRON_TEST_MGMT_KEY";
const KEY: &str = "mgmt-key-managed-71c2";
const SECRET: &str = "synced-secret-value-3e9a";

/// The agent's local YAML: loopback listeners (and a tunnel listener), the management API, and
/// the control plane at `url` polled every `interval`. `transforms` are set to show they are
/// ignored in managed mode.
fn yaml(ca: &TestCa, dir: &Path, url: &str, interval: &str) -> String {
    let (c, k) = ca.write(dir);
    managed_yaml(
        AgentConfig::loopback(&c, &k).tunnel_listener(),
        url,
        interval,
    )
}

/// `cfg` made managed: the management API and the control plane at `url`.
fn managed_yaml(cfg: AgentConfig, url: &str, interval: &str) -> String {
    let mut v = serde_json::to_value(&cfg).unwrap();
    v["management"] = json!({"listen": "127.0.0.1:0", "api_key_env": KEY_VAR});
    v["control_plane"] = json!({"url": url, "poll_interval": interval});
    v["transforms"] = json!([{"name": "allowlist", "config": {"domains": ["ignored.example"]}}]);
    serde_saphyr::to_string(&v).unwrap()
}

async fn mgmt(agent: &Agent, method: &str, path: &str) -> Reply {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mgmt")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    http_request(agent.addr("management"), req).await
}

async fn status(agent: &Agent) -> Value {
    let r = mgmt(agent, "GET", "/v1/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

async fn readyz(agent: &Agent) -> u16 {
    http_request(agent.addr("metrics"), get("metrics", "/readyz"))
        .await
        .status
}

/// Waits (bounded) until the agent applied its first sync.
async fn wait_ready(agent: &Agent, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !status(agent).await["synced_once"]
        .as_bool()
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "agent did not become ready; logs:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fetch(agent: &Agent, origin: &Origin) -> Reply {
    http_request(
        agent.addr("http"),
        get(&format!("localhost:{}", origin.port()), "/x"),
    )
    .await
}

/// A control plane with a principal granted one secret for `localhost`, and an assigned proxy.
struct Fleet {
    control: Control,
    principal: String,
    proxy: String,
    token: String,
}

async fn fleet(dir: &Path) -> Fleet {
    let control = Control::start(dir);
    control.allow(&["localhost"]).await;
    let principal = control.principal("agent-host").await;
    let secret = control
        .secret("origin-token", SECRET, "X-Api-Key", "localhost")
        .await;
    control.grant(&principal, &secret).await;
    let (proxy, token) = control.proxy(&principal).await;
    Fleet {
        control,
        principal,
        proxy,
        token,
    }
}

/// The agent on managed `yaml` (see [`managed_yaml`]) with the management API key set.
fn managed(yaml: &str) -> AgentBuilder {
    Agent::with_config(yaml).env(KEY_VAR, KEY)
}

/// The agent managed by the control plane at `url` (a fresh MITM CA in `dir`, see [`yaml`]).
fn managed_by(dir: &Path, url: &str, interval: &str) -> AgentBuilder {
    managed(&yaml(&TestCa::new("managed CA"), dir, url, interval))
}

/// The agent holding the fleet's proxy token (`IRON_PROXY_TOKEN`), once its first sync applied.
async fn synced_agent(f: &Fleet, dir: &Path) -> Agent {
    let agent = managed_by(dir, &f.control.url(), "1s")
        .env("IRON_PROXY_TOKEN", &f.token)
        .start();
    wait_ready(&agent, 20).await;
    agent
}

#[test]
fn synced_secret_is_injected_and_management_reports_the_sync() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let f = fleet(dir.path()).await;
        let origin = Origin::start(OriginKind::Http, None).await;
        // The Go-style single-dash flag, as iron-proxy is started.
        let agent = managed_by(dir.path(), &f.control.url(), "1s")
            .args(&["run", "-config", "{config}", "-token", &f.token])
            .start();
        wait_ready(&agent, 20).await;
        assert_eq!(readyz(&agent).await, 200);

        let r = fetch(&agent, &origin).await;
        assert_eq!(r.status, 200, "{}; logs:\n{}", r.text(), agent.logs());
        assert_eq!(r.echoed_header("x-api-key").as_deref(), Some(SECRET));
        // The synced allowlist (network policy) decides, not the ignored YAML transforms.
        let denied = http_request(agent.addr("http"), get("ignored.example", "/")).await;
        assert_eq!(denied.status, 403);
        assert!(agent.logs().contains("YAML `transforms` are ignored"));

        let st = status(&agent).await;
        assert!(
            st["config_hash"].as_str().unwrap().starts_with("sha256:"),
            "{st}"
        );
        assert_eq!(st["principal_id"], f.principal.as_str());
        assert_eq!(st["principal_status"], "assigned");
        assert_eq!(st["synced_once"], true);
        assert!(st["last_sync_at"].as_str().unwrap().ends_with('Z'), "{st}");

        let reload = mgmt(&agent, "POST", "/v1/reload").await;
        assert_eq!(reload.status, 404);
        assert_eq!(
            serde_json::from_slice::<Value>(&reload.body).unwrap()["error"],
            "reload is unavailable in managed mode"
        );
        let poke = mgmt(&agent, "POST", "/v1/sync").await;
        assert_eq!(poke.status, 202);
        assert_eq!(
            serde_json::from_slice::<Value>(&poke.body).unwrap(),
            json!({"status": "sync requested"})
        );
        assert!(agent.wait_for_log("sync requested through the management API"));

        agent.assert_not_logged(&f.token);
        agent.assert_not_logged(SECRET);
        let _ = f.proxy;
    });
}

#[test]
fn a_grant_change_reaches_the_agent_within_one_poll_interval_without_failed_requests() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let f = fleet(dir.path()).await;
        let origin = Origin::start(OriginKind::Http, None).await;
        let agent = synced_agent(&f, dir.path()).await;
        assert_eq!(fetch(&agent, &origin).await.echoed_header("x-second"), None);

        let second = f
            .control
            .secret("second", "second-secret-0b7d", "X-Second", "localhost")
            .await;
        f.control.grant(&f.principal, &second).await;
        let changed = Instant::now();
        let mut requests = 0;
        loop {
            let r = fetch(&agent, &origin).await;
            requests += 1;
            assert_eq!(
                r.status,
                200,
                "request {requests} failed during the sync: {}",
                r.text()
            );
            assert_eq!(r.echoed_header("x-api-key").as_deref(), Some(SECRET));
            if r.echoed_header("x-second").as_deref() == Some("second-secret-0b7d") {
                break;
            }
            // One interval (1 s, +10 % jitter) plus the time to apply.
            assert!(
                changed.elapsed() < Duration::from_millis(2500),
                "the grant did not arrive within one poll interval; logs:\n{}",
                agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(requests > 1);
        agent.assert_not_logged(&f.token);
        agent.assert_not_logged("second-secret-0b7d");
    });
}

#[test]
fn a_revoked_proxy_stops_with_status_1() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let f = fleet(dir.path()).await;
        let mut agent = synced_agent(&f, dir.path()).await;
        let (st, _) = f
            .control
            .call("DELETE", &format!("/api/v1/proxies/{}", f.proxy), None)
            .await;
        assert_eq!(st, 204);
        let exit = agent.wait_exit(Duration::from_secs(15));
        assert_eq!(exit.code(), Some(1), "logs:\n{}", agent.logs());
        let logs = agent.logs();
        assert!(logs.contains("proxy_revoked"), "{logs}");
        assert!(logs.contains("revoked on the control plane"), "{logs}");
        agent.assert_not_logged(&f.token);
    });
}

/// Sends a CONNECT through the tunnel listener; returns the status line.
async fn connect_status(tunnel: SocketAddr, target: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(tunnel).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A SOCKS5 CONNECT to `host:port`; returns the reply code.
async fn socks5_reply(tunnel: SocketAddr, host: &str, port: u16) -> u8 {
    let mut s = tokio::net::TcpStream::connect(tunnel).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await.unwrap();
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await.unwrap();
    reply[1]
}

#[test]
fn control_plane_down_at_startup_then_up() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut f = fleet(dir.path()).await;
        let (addr, key) = (f.control.addr, f.control.api_key.clone());
        f.control.kill();
        let origin = Origin::start(OriginKind::Http, None).await;
        let agent = managed_by(dir.path(), &format!("http://{addr}"), "1s")
            .env("IRON_PROXY_TOKEN", &f.token)
            .start();
        // Up, serving, not ready: every way in is refused and audited.
        assert!(agent.wait_for_log("control plane sync failed"));
        assert_eq!(readyz(&agent).await, 503);
        assert_eq!(status(&agent).await["synced_once"], false);
        let r = fetch(&agent, &origin).await;
        assert_eq!(r.status, 503, "{}", r.text());
        let tunnel = agent.addr("tunnel");
        let target = format!("localhost:{}", origin.port());
        assert!(
            connect_status(tunnel, &target).await.contains(" 503 "),
            "CONNECT before the first sync"
        );
        assert_eq!(socks5_reply(tunnel, "localhost", origin.port()).await, 0x02);
        let refused = agent.audits_where(3, |v| v["reason"] == "not_ready");
        assert!(refused.iter().all(|v| v["action"] == "reject"));
        assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

        // The control plane appears on the same address: the agent becomes ready by itself.
        let control = Control::start_on(dir.path(), &addr.to_string(), &key);
        wait_ready(&agent, 40).await;
        assert_eq!(readyz(&agent).await, 200);
        let r = fetch(&agent, &origin).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echoed_header("x-api-key").as_deref(), Some(SECRET));
        agent.assert_not_logged(&f.token);
        drop(control);
    });
}

/// `tls.mode: sni-only` before the first sync: the ClientHello is read, the connection is closed
/// without a handshake, and exactly one record says `not_ready`.
#[test]
fn sni_only_before_the_first_sync_is_closed_as_not_ready() {
    iron_agent_tests::runtime().block_on(async {
        // A port nothing listens on: the control plane is down for the whole test.
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ca = TestCa::new("sni-only client CA");
        let mut cfg = AgentConfig::loopback(Path::new("."), Path::new("."));
        cfg.tls = Tls {
            mode: Some("sni-only".into()),
            ..Tls::default()
        };
        let agent = managed(&managed_yaml(cfg, &format!("http://{down}"), "1s"))
            .env("IRON_PROXY_TOKEN", "never-synced-token-5d1f")
            .start();
        assert!(agent.wait_for_log("control plane sync failed"));
        assert_eq!(status(&agent).await["synced_once"], false);

        let err = https_request(
            agent.addr("https"),
            "sni.test",
            ca.client_config(),
            get("sni.test", "/"),
        )
        .await
        .expect_err("no TLS handshake may complete before the first sync");
        assert!(err.starts_with("tls:"), "{err}");
        let rec = agent.audits_where(1, |v| v["reason"] == "not_ready");
        assert_eq!(rec[0]["action"], "reject", "{rec:?}");
        assert_eq!(rec[0]["mode"], "sni-only", "{rec:?}");
        assert_eq!(agent.audits().len(), 1, "{:?}", agent.audits());
    });
}

/// A fake control plane: answers each sync with the next scripted reply (the last one
/// repeats) and records the bearer and the `config_hash` of every call.
struct Fake {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(script: Vec<(u16, Value)>) -> Fake {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (c, script) = (calls.clone(), Arc::new(script));
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (c, script) = (c.clone(), script.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (c, script) = (c.clone(), script.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let held = serde_json::from_slice::<Value>(&body).unwrap_or_default()
                                ["config_hash"]
                                .as_str()
                                .unwrap_or("<none>")
                                .to_string();
                            let n = {
                                let mut calls = c.lock().unwrap();
                                calls.push((auth, held));
                                calls.len() - 1
                            };
                            let (status, v) = &script[n.min(script.len() - 1)];
                            let mut resp =
                                http::Response::new(Full::new(Bytes::from(v.to_string())));
                            *resp.status_mut() = http::StatusCode::from_u16(*status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Fake { addr, calls, task }
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn a_bad_sync_answer_keeps_the_old_state_and_hash() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("iprx_{}", "ab".repeat(32));
        let good = json!({
            "config_hash": "sha256:one", "status": "assigned", "principal_id": "prn_fake",
            "rules": [{"host": "localhost"}],
            "secrets": [{"source": {"type": "control_plane", "value": SECRET},
                         "inject": {"header": "X-Api-Key"}, "rules": [{"host": "localhost"}]}],
        });
        // Quotes the secret in a field the decoder rejects: the rejection must not log it.
        let bad = json!({
            "config_hash": "sha256:two", "status": "assigned", "principal_id": "prn_fake",
            "rules": [],
            "secrets": [{"source": {"type": "control_plane", "value": SECRET},
                         "inject": SECRET}],
        });
        // A 503 first (retried with backoff), a 401 without a code (kept up, retried), then
        // the good answer, then the bad one forever.
        let fake = Fake::start(vec![
            (503, json!({"error": {"message": "maintenance"}})),
            (
                401,
                json!({"error": {"message": "invalid or missing proxy token"}}),
            ),
            (200, good),
            (200, bad),
        ])
        .await;
        let origin = Origin::start(OriginKind::Http, None).await;
        let agent = managed_by(dir.path(), &format!("http://{}", fake.addr), "300ms")
            .env("IRON_PROXY_TOKEN", &token)
            .start();
        wait_ready(&agent, 20).await;
        // Wait for several polls after the bad answer started.
        let deadline = Instant::now() + Duration::from_secs(15);
        while fake.calls().len() < 6 {
            assert!(
                Instant::now() < deadline,
                "agent stopped polling; logs:\n{}",
                agent.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let calls = fake.calls();
        assert!(
            calls
                .iter()
                .all(|(auth, _)| *auth == format!("Bearer {token}"))
        );
        let held: Vec<&str> = calls.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(&held[..3], ["", "", ""], "{held:?}");
        // After the good answer the agent holds its hash, and keeps holding it.
        assert!(held[3..].iter().all(|h| *h == "sha256:one"), "{held:?}");
        assert_eq!(status(&agent).await["config_hash"], "sha256:one");
        // The old pipeline still serves (the bad one would have denied everything).
        let r = fetch(&agent, &origin).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echoed_header("x-api-key").as_deref(), Some(SECRET));
        let logs = agent.logs();
        assert!(
            logs.contains("rejecting invalid config from sync"),
            "{logs}"
        );
        assert!(logs.contains("http_401"), "{logs}");
        assert!(
            logs.contains("http_503") || logs.contains("maintenance"),
            "{logs}"
        );
        agent.assert_not_logged(&token);
        agent.assert_not_logged(SECRET);
    });
}

#[test]
fn plain_http_to_a_remote_control_plane_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("iprx_{}", "cd".repeat(32));
    let mut agent = managed_by(dir.path(), "http://cp.example:8080", "1s")
        .env("IRON_PROXY_TOKEN", &token)
        .start();
    let exit = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(1));
    let logs = agent.logs();
    assert!(logs.contains("control_plane.url:"), "{logs}");
    assert!(logs.contains("allow_insecure"), "{logs}");
    agent.assert_not_logged(&token);
}
