//! Reload (`POST /v1/reload` on the management API, SIGHUP) and the management API, against
//! the real binary under load: policy changes take effect, bad configs leave everything as
//! it was (422), and no request fails across reloads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iron_agent_tests::client::{Reply, get};
use iron_agent_tests::grpc_transform::{Call, ServerTls, TransformServer};
use iron_agent_tests::{
    Agent, AgentBuilder, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request,
};
use serde_json::{Value, json};

use crate::metrics::scrape_metrics;

const KEY_VAR: &str = "IRON_TEST_MGMT_KEY";
const KEY: &str = "mgmt-key-5d1e";

/// The config file text: `cfg` plus a management block on a free loopback port.
fn yaml(cfg: &AgentConfig) -> String {
    yaml_with(cfg, json!({}))
}

/// [`yaml`] with top-level blocks `AgentConfig` has no field for (`extra`: an object).
fn yaml_with(cfg: &AgentConfig, extra: Value) -> String {
    let mut v = serde_json::to_value(cfg).unwrap();
    v["management"] = json!({"listen": "127.0.0.1:0", "api_key_env": KEY_VAR});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_saphyr::to_string(&v).unwrap()
}

/// An agent on `cfg` with the management API on (its key in the environment), for other
/// modules' reload tests.
pub(crate) fn with_management(cfg: &AgentConfig) -> AgentBuilder {
    Agent::with_config(&yaml(cfg)).env(KEY_VAR, KEY)
}

/// Rewrites the config file of an agent from [`with_management`] with `cfg`.
pub(crate) fn rewrite(agent: &Agent, cfg: &AgentConfig) {
    std::fs::write(&agent.config_path, yaml(cfg)).unwrap();
}

/// Reloads an agent from [`with_management`] by `POST /v1/reload` (`api`) or SIGHUP and
/// returns the reload's log line once it is written (bounded wait).
pub(crate) async fn reload_agent(agent: &Agent, api: bool) -> Value {
    let before = reload_lines(agent).len();
    if api {
        let req = http::Request::post("/v1/reload")
            .header("host", "mgmt")
            .header("authorization", format!("Bearer {KEY}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = http_request(agent.addr("management"), req).await;
        assert!(matches!(r.status, 200 | 422), "{}", r.text());
    } else {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(agent.pid() as i32, libc::SIGHUP);
        }
    }
    next_reload_line(agent, before).await
}

/// The `config reloaded` / `config reload failed` lines so far.
fn reload_lines(agent: &Agent) -> Vec<Value> {
    agent
        .json_lines()
        .into_iter()
        .filter(|v| {
            v["msg"] == "config reloaded"
                || v["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("config reload failed"))
        })
        .collect()
}

/// The reload line after the first `before` ones, waiting (bounded) for it.
async fn next_reload_line(agent: &Agent, before: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = reload_lines(agent);
        if lines.len() > before {
            return lines[before].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Fixture {
    agent: Agent,
    origin: Origin,
    base: AgentConfig,
    _dir: tempfile::TempDir,
    _ca: TestCa,
}

impl Fixture {
    async fn start(allow: &[&str]) -> Fixture {
        Self::start_with(vec![Transform::allowlist(allow)]).await
    }

    async fn start_with(transforms: Vec<Transform>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("reload MITM CA");
        let (c, k) = ca.write(dir.path());
        // The origin's `/slow` answers after 3 s: headers may take longer than the preset's 2 s.
        let base = AgentConfig::loopback(&c, &k)
            .with(|c| c.proxy.upstream_response_header_timeout = Some("10s".into()));
        let origin = Origin::start(OriginKind::Http, None).await;
        let cfg = base.clone().transforms(transforms);
        let agent = with_management(&cfg).start();
        Fixture {
            agent,
            origin,
            base,
            _dir: dir,
            _ca: ca,
        }
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.origin.port())
    }

    /// Rewrites the config file with allowlist `allow`.
    fn write_allow(&self, allow: &[&str]) {
        let cfg = self.base.clone().transforms([Transform::allowlist(allow)]);
        self.write(&yaml(&cfg));
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.agent.config_path, text).unwrap();
    }

    async fn get_status(&self) -> u16 {
        http_request(self.agent.addr("http"), get(&self.host(), "/x"))
            .await
            .status
    }

    async fn api(&self, method: &str, path: &str, auth: Option<&str>) -> Reply {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "mgmt");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let req = b.body(Full::new(Bytes::new())).unwrap();
        http_request(self.agent.addr("management"), req).await
    }

    async fn reload(&self) -> Reply {
        self.api("POST", "/v1/reload", Some(&format!("Bearer {KEY}")))
            .await
    }

    fn reload_lines(&self) -> Vec<Value> {
        reload_lines(&self.agent)
    }

    /// Reloads by API (expecting `status`) or by SIGHUP; the reload's log line.
    async fn reload_by(&self, api: bool, status: u16) -> Value {
        if !api {
            return self.sighup().await;
        }
        let before = self.reload_lines().len();
        let r = self.reload().await;
        assert_eq!(r.status, status, "{}", r.text());
        if status == 200 {
            assert_eq!(json_of(&r), json!({"status": "ok"}));
        }
        next_reload_line(&self.agent, before).await
    }

    /// Sends SIGHUP and waits (bounded) until the reload it triggered is logged.
    async fn sighup(&self) -> Value {
        reload_agent(&self.agent, false).await
    }
}

fn json_of(r: &Reply) -> Value {
    assert_eq!(
        r.headers["content-type"],
        "application/json",
        "{}",
        r.text()
    );
    assert!(r.text().ends_with('\n'));
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

/// Requests to `host` until `stop`: one keep-alive connection reused throughout, and a new
/// connection for every other request. Returns (ok, failed) counts.
async fn load(http: SocketAddr, host: String, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let ok = AtomicUsize::new(0);
    let mut failed = Vec::new();
    let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    while !stop.load(Ordering::SeqCst) {
        // The kept connection: it must survive every reload.
        match kept.send_request(get(&host, "/kept")).await {
            Ok(r) if r.status() == 200 => {
                let _ = r.into_body().collect().await;
                ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => failed.push(format!("kept: status {}", r.status())),
            Err(e) => {
                failed.push(format!("kept: {e}"));
                break;
            }
        }
        let fresh = async {
            let tcp = tokio::net::TcpStream::connect(http)
                .await
                .map_err(|e| e.to_string())?;
            let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(c);
            let r = s
                .send_request(get(&host, "/fresh"))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(r.status())
        };
        match fresh.await {
            Ok(s) if s == 200 => {
                ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(s) => failed.push(format!("fresh: status {s}")),
            Err(e) => failed.push(format!("fresh: {e}")),
        }
    }
    (ok.load(Ordering::SeqCst), failed)
}

#[test]
fn ten_reloads_by_api_and_sighup_under_load_fail_no_request() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let fx = Fixture::start(&["localhost"]).await;
        let metrics = fx.agent.addr("metrics");
        let mut in_force = scrape_metrics(metrics).await.config_hash();
        assert!(in_force.starts_with("sha256:"), "{in_force}");
        let stop = Arc::new(AtomicBool::new(false));
        let loader = tokio::spawn(load(fx.agent.addr("http"), fx.host(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut hashes = std::collections::HashSet::new();
        let mut bad = 0;
        for i in 0..10 {
            let by_api = i % 2 == 0;
            // Every third generation a broken file comes first, by API or SIGHUP: refused under
            // load, and the hash in force does not move.
            if i % 3 == 0 {
                fx.write("transforms: [");
                let line = fx.reload_by(by_api, 422).await;
                assert_eq!(
                    line["msg"], "config reload failed; previous config kept",
                    "{line}"
                );
                bad += 1;
                assert_eq!(scrape_metrics(metrics).await.config_hash(), in_force);
            }
            // Each generation a different config: the second domain alternates.
            let other = if i % 2 == 0 { "a.test" } else { "b.test" };
            fx.write_allow(&["localhost", other]);
            let line = fx.reload_by(by_api, 200).await;
            assert_eq!(line["msg"], "config reloaded", "{line}");
            assert_eq!(line["trigger"], if by_api { "api" } else { "SIGHUP" });
            assert_eq!(line["changed"], "transforms", "{line}");
            let hash = line["config_hash"].as_str().unwrap().to_string();
            // The info metric names the new config at once.
            let now = scrape_metrics(metrics).await.config_hash();
            assert_eq!(now, hash);
            assert_ne!(now, in_force, "a changed file must change the hash");
            in_force = now;
            hashes.insert(hash);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A reload of an unchanged file is a success that keeps the hash.
        let line = fx.reload_by(true, 200).await;
        assert_eq!(line["changed"], "nothing (secret sources re-resolved)");
        stop.store(true, Ordering::SeqCst);
        let (ok, failed) = loader.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        assert!(
            ok > 20,
            "load loop too slow to mean anything: {ok} requests"
        );
        // Two file contents, alternating.
        assert_eq!(hashes.len(), 2, "{hashes:?}");
        assert!(
            hashes
                .iter()
                .all(|h| h.starts_with("sha256:") && h.len() == 71)
        );
        let m = scrape_metrics(metrics).await;
        assert_eq!(m.config_hash(), in_force, "a no-op reload keeps the hash");
        assert_eq!(
            m.value(r#"iron_agent_reloads_total{result="success"}"#),
            Some(10.0 + 1.0),
            "{}",
            m.text
        );
        assert_eq!(
            m.value(r#"iron_agent_reloads_total{result="failure"}"#),
            Some(f64::from(bad)),
            "{}",
            m.text
        );
    });
}

/// The names of the transforms in `rec`'s `phase` (`request_transforms`, `response_transforms`).
fn trace_names(rec: &Value, phase: &str) -> Vec<String> {
    rec[phase]
        .as_array()
        .unwrap_or_else(|| panic!("no {phase}: {rec}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The paths a transform service was called with, in its response phase or its request phase.
fn called(svc: &TransformServer, response: bool) -> Vec<String> {
    svc.calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Response(_)) == response)
        .map(|c| c.request().url.clone())
        .collect()
}

/// Each generation's pipeline ends in a `grpc` transform with its own name and its own service,
/// both phases: the audit traces and the services' call logs show which generation ran which
/// phase of each request.
#[test]
fn policy_change_takes_effect_and_in_flight_requests_keep_their_pipeline() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let old_svc = TransformServer::start(ServerTls::Plain).await;
        let new_svc = TransformServer::start(ServerTls::Plain).await;
        let generation = |name: &str, svc: &TransformServer, allow: &[&str]| {
            vec![
                Transform::allowlist(allow),
                Transform::new("grpc", json!({"name": name, "target": svc.target()})),
            ]
        };
        let fx = Fixture::start_with(generation("gen-old", &old_svc, &["localhost"])).await;
        let write =
            |transforms: Vec<Transform>| fx.write(&yaml(&fx.base.clone().transforms(transforms)));

        // One keep-alive connection; its first request is slow (3 s in the old service's
        // request phase, then 3 s at the origin), so the reload lands while it is in flight
        // and its response phase runs seconds after the reload.
        let tcp = tokio::net::TcpStream::connect(fx.agent.addr("http"))
            .await
            .unwrap();
        let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let host = fx.host();
        let slow = tokio::spawn(async move {
            let r = kept.send_request(get(&host, "/slow")).await.unwrap();
            let status = r.status();
            r.into_body().collect().await.unwrap();
            (status, kept)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        write(generation("gen-new", &new_svc, &["localhost"]));
        let r = fx.reload().await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            !slow.is_finished(),
            "the slow request ended before the reload"
        );

        // A new request meanwhile runs on the new pipeline, both phases.
        assert_eq!(fx.get_status().await, 200);
        let a = fx.agent.audit_where(|a| a["path"] == "/x");
        assert_eq!(
            trace_names(&a, "request_transforms"),
            ["allowlist", "gen-new"]
        );
        assert_eq!(
            trace_names(&a, "response_transforms"),
            ["allowlist", "gen-new"]
        );

        // The slow one finishes on the pipeline it started with, response phase included.
        let (status, mut kept) = slow.await.unwrap();
        assert_eq!(status, 200);
        let a = fx.agent.audit_where(|a| a["path"] == "/slow");
        assert_eq!(a["action"], "allow", "{a}");
        assert_eq!(
            trace_names(&a, "request_transforms"),
            ["allowlist", "gen-old"]
        );
        assert_eq!(
            trace_names(&a, "response_transforms"),
            ["allowlist", "gen-old"]
        );
        assert_eq!(called(&old_svc, true), ["/slow"]);
        assert!(!called(&new_svc, false).contains(&"/slow".to_string()));
        assert!(!called(&new_svc, true).contains(&"/slow".to_string()));

        // The next request on the same connection gets the new one.
        let r = kept.send_request(get(&fx.host(), "/after")).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        let a = fx.agent.audit_where(|a| a["path"] == "/after");
        assert_eq!(
            trace_names(&a, "request_transforms"),
            ["allowlist", "gen-new"]
        );
        assert_eq!(
            trace_names(&a, "response_transforms"),
            ["allowlist", "gen-new"]
        );
        assert_eq!(called(&new_svc, true), ["/x", "/after"]);
        assert_eq!(
            called(&old_svc, false),
            ["/slow"],
            "old service: nothing after the reload"
        );

        // A policy that denies: by SIGHUP, on the same connection and on new ones.
        write(generation("gen-old", &old_svc, &["elsewhere.test"]));
        assert_eq!(fx.sighup().await["msg"], "config reloaded");
        let r = kept.send_request(get(&fx.host(), "/denied")).await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(fx.get_status().await, 403);
        let denied = fx.agent.audit_where(|a| a["path"] == "/denied");
        assert_eq!(denied["rejected_by"], "allowlist", "{denied}");
    });
}

#[test]
fn bad_reload_is_422_and_changes_nothing() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let fx = Fixture::start(&["localhost"]).await;
        let good = std::fs::read_to_string(&fx.agent.config_path).unwrap();
        // An unknown key inside the allowlist: the whole file is refused.
        fx.write(&good.replace("domains:", "domain:"));
        let r = fx.reload().await;
        assert_eq!(r.status, 422, "{}", r.text());
        let err = json_of(&r)["error"].as_str().unwrap().to_string();
        assert!(err.contains("transforms[0].config.domain"), "{err}");
        assert_eq!(fx.get_status().await, 200, "old policy still in force");
        let line = fx.reload_lines().last().cloned().unwrap();
        assert_eq!(line["msg"], "config reload failed; previous config kept");
        assert_eq!(line["level"], "WARN");

        // Not YAML at all, and by SIGHUP: logged, nothing changes, the agent keeps running.
        fx.write("transforms: [");
        let line = fx.sighup().await;
        assert_eq!(
            line["msg"], "config reload failed; previous config kept",
            "{line}"
        );
        assert_eq!(fx.get_status().await, 200);

        // A transform that cannot be built (bad CIDR in the allowlist).
        let bad = fx.base.clone().transforms([Transform::new(
            "allowlist",
            json!({"domains": ["localhost"], "cidrs": ["10.0.0.1"]}),
        )]);
        fx.write(&yaml(&bad));
        let r = fx.reload().await;
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(
            json_of(&r)["error"].as_str().unwrap().contains("10.0.0.1"),
            "{}",
            r.text()
        );
        assert_eq!(fx.get_status().await, 200);
    });
}

/// A reload re-applies the running process's `IRON_*` overrides: `IRON_PROXY_UPSTREAM_DENY_CIDRS`
/// (fixed at start) still replaces the file's empty list afterwards, so the reload is not
/// refused as a change of that setting, and loopback upstreams stay denied.
#[test]
fn reload_reapplies_iron_overrides() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("reload override CA").write(dir.path());
        let origin = Origin::start(OriginKind::Http, None).await;
        // `upstream_deny_cidrs: []` in the file.
        let cfg = |allow: &[&str]| {
            AgentConfig::loopback(&c, &k).transforms([Transform::allowlist(allow)])
        };
        let agent = with_management(&cfg(&["localhost"]))
            .env("IRON_PROXY_UPSTREAM_DENY_CIDRS", "127.0.0.0/8,::1/128")
            .start();
        let host = format!("localhost:{}", origin.port());
        let denied = |path: &'static str| {
            let (http, host, agent) = (agent.addr("http"), host.clone(), &agent);
            async move {
                let r = http_request(http, get(&host, path)).await;
                assert_eq!(r.status, 502, "{}", r.text());
                let a = agent.audit_where(|a| a["path"] == path);
                let err = a["error"].as_str().unwrap_or_default().to_string();
                assert!(err.contains("denied by upstream_deny_cidrs"), "{err}");
            }
        };
        denied("/before").await;

        rewrite(&agent, &cfg(&["localhost", "other.test"]));
        let line = reload_agent(&agent, true).await;
        assert_eq!(line["msg"], "config reloaded", "{line}");
        assert_eq!(line["changed"], "transforms", "{line}");
        denied("/after").await;
        assert_eq!(origin.hits(), 0, "a denied address is never dialled");
    });
}

#[test]
fn changed_fixed_settings_are_named_in_the_422() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let fx = Fixture::start(&["localhost"]).await;
        let cfg = fx
            .base
            .clone()
            .transforms([Transform::allowlist(&["elsewhere.test"])])
            .with(|c| {
                c.proxy.http_listen = Some("127.0.0.1:1".into());
                c.proxy.max_request_body_bytes = Some(10);
            });
        fx.write(&yaml(&cfg));
        let r = fx.reload().await;
        assert_eq!(r.status, 422, "{}", r.text());
        let err = json_of(&r)["error"].as_str().unwrap().to_string();
        assert!(err.contains("proxy.http_listen"), "{err}");
        assert!(err.contains("proxy.max_request_body_bytes"), "{err}");
        assert!(err.contains("restart"), "{err}");
        // All or nothing: the allowlist change in the same file was not applied either.
        assert_eq!(fx.get_status().await, 200);

        // Read once at start, never compared before: the connection limits and the
        // control-plane client. Each one alone is refused and named, not "changed: nothing".
        let allow = || {
            fx.base
                .clone()
                .transforms([Transform::allowlist(&["elsewhere.test"])])
        };
        let cases = [
            (
                allow().with(|c| c.proxy.max_connections = Some(4000)),
                json!({}),
                "proxy.max_connections",
            ),
            (
                allow().with(|c| c.proxy.max_connections_per_client = Some(3)),
                json!({}),
                "proxy.max_connections_per_client",
            ),
            (
                allow(),
                json!({"control_plane": {"url": "https://cp.test"}}),
                "control_plane.url",
            ),
            (
                allow(),
                json!({"control_plane": {"allow_insecure": true}}),
                "control_plane.allow_insecure",
            ),
        ];
        for (cfg, extra, field) in cases {
            fx.write(&yaml_with(&cfg, extra));
            let r = fx.reload().await;
            assert_eq!(r.status, 422, "{field}: {}", r.text());
            let err = json_of(&r)["error"].as_str().unwrap().to_string();
            assert!(
                err.ends_with(&format!("restart the agent to apply them): {field}")),
                "{err}"
            );
            assert_eq!(fx.get_status().await, 200, "{field}: old policy kept");
        }
        let lines = fx.reload_lines();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| l["msg"] == "config reload failed; previous config kept"),
            "{lines:?}"
        );
    });
}

#[test]
fn management_api_auth_methods_and_standalone_answers() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let fx = Fixture::start(&["localhost"]).await;
        let bearer = format!("Bearer {KEY}");
        for auth in [
            None,
            Some("Bearer wrong"),
            Some(KEY),
            Some(&*format!("bearer {KEY}")),
        ] {
            let r = fx.api("POST", "/v1/reload", auth).await;
            assert_eq!(r.status, 401, "{auth:?}");
            assert_eq!(json_of(&r), json!({"error": "unauthorized"}));
        }
        // Auth is checked before the method.
        assert_eq!(fx.api("GET", "/v1/reload", None).await.status, 401);
        let r = fx.api("GET", "/v1/reload", Some(&bearer)).await;
        assert_eq!(r.status, 405);
        assert_eq!(r.headers["allow"], "POST");
        assert_eq!(json_of(&r), json!({"error": "method not allowed"}));
        let r = fx.api("GET", "/v1/status", Some(&bearer)).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            json_of(&r),
            json!({"error": "status is unavailable in standalone mode"})
        );
        let r = fx.api("POST", "/v1/status", Some(&bearer)).await;
        assert_eq!(
            (r.status, r.headers["allow"].to_str().unwrap()),
            (405, "GET")
        );
        let r = fx.api("POST", "/v1/sync", Some(&bearer)).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            json_of(&r),
            json!({"error": "sync is unavailable in standalone mode"})
        );
        // Unknown paths: plain 404, no auth needed.
        let r = fx.api("GET", "/v1/nope", None).await;
        assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
        // No reload happened, and the key never reached the log.
        assert!(fx.reload_lines().is_empty());
        fx.agent.assert_not_logged(KEY);
    });
}

/// eBPF mode (root): a reload moves uids between policies in the kernel's policy map; each
/// user's next connection is judged by its new policy. A reload naming an unknown user or a
/// missing cgroup is refused before anything is written.
#[test]
fn reload_moves_users_between_policies_in_the_kernel_maps() {
    use iron_agent_tests::ebpf_world::{World, curl, intercept};
    use iron_agent_tests::netns::TestUser;
    let Some(world) = World::enter("eBPF programs, test users, a network namespace") else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("reload eBPF MITM CA");
    let cfg = world.config(&mitm);
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();
    let code = |u: &TestUser, url: &str| curl(u, &ca, &["-4"], url).1;

    // At start: iatest1 top-level (api.test allowed), iatest2 `restricted` (other.test only).
    assert_eq!(
        code(&u1, "https://api.test/u1-before"),
        "200",
        "{}",
        agent.logs()
    );
    assert_eq!(code(&u2, "https://api.test/u2-before"), "403");

    let reloads = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let lines: Vec<Value> = agent
                .json_lines()
                .into_iter()
                .filter(|v| {
                    v["msg"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("config reload"))
                })
                .collect();
            if lines.len() >= n {
                return lines[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no reload logged:\n{}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let hup = || {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(agent.pid() as i32, libc::SIGHUP);
        }
    };
    let with_users = |governed: &[&str], restricted: &[&str]| {
        cfg.clone().with(|c| {
            c.intercept = Some(intercept(json!({
                "governed": {"users": governed},
                "policies": [{
                    "name": "restricted",
                    "users": restricted,
                    "transforms": [{"name": "allowlist", "config": {"domains": ["other.test"]}}],
                }],
            })))
        })
    };

    // Swap them.
    std::fs::write(
        &agent.config_path,
        with_users(&["iatest2"], &["iatest1"]).to_yaml(),
    )
    .unwrap();
    hup();
    let line = reloads(1);
    assert_eq!(line["msg"], "config reloaded", "{line}");
    assert_eq!(
        line["changed"], "intercept.governed, intercept.policies[0]",
        "{line}"
    );
    assert_eq!(code(&u1, "https://api.test/u1-after"), "403");
    assert_eq!(code(&u1, "https://other.test/u1-other"), "200");
    assert_eq!(code(&u2, "https://api.test/u2-after"), "200");
    let a = agent.audit_where(|a| a["path"] == "/u1-other");
    assert_eq!(
        (a["uid"].clone(), a["policy"].clone()),
        (json!(u1.uid), json!("restricted"))
    );

    // An unknown user: refused as a whole, the maps keep the swapped state.
    std::fs::write(
        &agent.config_path,
        with_users(&["iatest1"], &["iatest2", "no-such-user-9q"]).to_yaml(),
    )
    .unwrap();
    hup();
    let line = reloads(2);
    assert_eq!(
        line["msg"], "config reload failed; previous config kept",
        "{line}"
    );
    assert!(
        line["error"].as_str().unwrap().contains("no-such-user-9q"),
        "{line}"
    );
    assert_eq!(code(&u1, "https://api.test/u1-still"), "403");
    assert_eq!(code(&u2, "https://api.test/u2-still"), "200");

    // A cgroup path that does not exist, after the users are swapped back: refused before
    // anything is written (naming the field), so neither the profiles nor the maps move.
    let missing_cgroup = with_users(&["iatest1"], &["iatest2"]).with(|c| {
        c.intercept.as_mut().unwrap()["policies"][0]["cgroups"] =
            json!(["/sys/fs/cgroup/iron-no-such-cgroup-9q"]);
    });
    std::fs::write(&agent.config_path, missing_cgroup.to_yaml()).unwrap();
    hup();
    let line = reloads(3);
    assert_eq!(
        line["msg"], "config reload failed; previous config kept",
        "{line}"
    );
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("intercept.policies[0].cgroups[0]"),
        "{line}"
    );
    assert_eq!(code(&u1, "https://api.test/u1-kept"), "403");
    assert_eq!(code(&u1, "https://other.test/u1-kept"), "200");
    assert_eq!(code(&u2, "https://api.test/u2-kept"), "200");
}

/// eBPF mode (root): a reload that drops `iatest2`'s policy entry prunes its map entry (its next
/// connection is judged by the top-level pipeline, with no `policy` in the record), and a
/// connection it opened under that policy before the reload is refused from its next request
/// (`403`, `unknown_policy`), never given the top-level pipeline.
#[test]
fn reload_dropping_a_policy_prunes_its_users_and_refuses_its_open_connections() {
    use std::os::unix::fs::PermissionsExt;

    use iron_agent_tests::ebpf_world::{World, curl, intercept};
    use iron_agent_tests::netns::TestUser;
    let Some(world) = World::enter("eBPF programs, test users, a network namespace") else {
        return;
    };
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("reload prune MITM CA");
    let cfg = world.config(&mitm);
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();
    assert_eq!(
        curl(&u2, &ca, &["-4"], "https://api.test/u2-before").1,
        "403"
    );

    // A keep-alive connection of iatest2 opened under `restricted`: one request now, the next
    // once the test creates `go` (after the reload).
    let signals = tempfile::tempdir().unwrap();
    std::fs::set_permissions(signals.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let go = signals.path().join("go");
    let script = format!(
        r#"
import http.client, os, ssl, time
c = http.client.HTTPSConnection("other.test", 443, timeout=10,
    context=ssl.create_default_context(cafile={ca:?}))
for path in ("/keep-1", "/keep-2"):
    if path == "/keep-2":
        end = time.time() + 15
        while not os.path.exists({go:?}) and time.time() < end:
            time.sleep(0.05)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    print(r.status, flush=True)
"#,
        ca = ca.to_string_lossy(),
        go = go.to_string_lossy(),
    );
    std::thread::scope(|scope| {
        let kept = scope.spawn(|| u2.python(&script));
        let first = agent.audit_where(|a| a["path"] == "/keep-1");
        assert_eq!(
            (first["action"].clone(), first["policy"].clone()),
            (json!("allow"), json!("restricted")),
            "{first}"
        );

        // Drop the policy entry; iatest2 becomes governed by the top-level pipeline.
        let dropped = cfg.clone().with(|c| {
            c.intercept = Some(intercept(
                json!({"governed": {"users": ["iatest1", "iatest2"]}}),
            ))
        });
        std::fs::write(&agent.config_path, dropped.to_yaml()).unwrap();
        let line = world.rt.block_on(reload_agent(&agent, false));
        assert_eq!(line["msg"], "config reloaded", "{line}");
        assert_eq!(
            line["changed"], "intercept.governed, intercept.policies[0]",
            "{line}"
        );
        std::fs::write(&go, "").unwrap();

        let out = kept.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.split_whitespace().collect::<Vec<_>>(),
            ["200", "403"],
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let refused = agent.audit_where(|a| a["path"] == "/keep-2");
    assert_eq!(refused["action"], "reject", "{refused}");
    assert_eq!(refused["status_code"], 403, "{refused}");
    assert_eq!(refused["reason"], "unknown_policy", "{refused}");
    assert_eq!(refused["uid"], json!(u2.uid), "{refused}");

    // A new connection: the kernel no longer tags iatest2 with the dropped policy.
    assert_eq!(
        curl(&u2, &ca, &["-4"], "https://api.test/u2-after").1,
        "200",
        "{}",
        agent.logs()
    );
    let a = agent.audit_where(|a| a["path"] == "/u2-after");
    assert_eq!(a["uid"], json!(u2.uid), "{a}");
    assert!(a.get("policy").is_none(), "top-level pipeline: {a}");
}

/// Without `--config` there is no file for `/v1/reload` to re-read: iron-proxy's message, exit 1,
/// before any listener is bound.
#[test]
fn management_listen_without_config_file_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(iron_agent_tests::agent::agent_bin())
        .arg("run")
        .env("IRON_AGENT_STATE_DIR", state.path())
        .env("IRON_MANAGEMENT_LISTEN", "127.0.0.1:0")
        .env("IRON_MANAGEMENT_API_KEY", KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: management.listen requires --config in standalone mode; /v1/reload has no file to re-read"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("\"msg\":\"listening\""), "{stderr}");
}

/// The PostgreSQL proxy takes a changed `postgres` block on reload: new sessions get the new
/// pinned settings, on the same listener.
#[test]
fn reload_applies_a_changed_postgres_block() {
    use iron_agent_tests::postgres::{
        Cluster, PROXY_PASSWORD, PROXY_USER, agent_config, proxy_block, psql,
    };
    let cluster = Cluster::start();
    let cfg = |tenant: &str| {
        agent_config(proxy_block(
            "127.0.0.1:0",
            &[("appdb", Some("tenant_role"), &[("app.tenant", tenant)])],
        ))
    };
    let mut agent = Agent::with(&cfg("acme"))
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env("PG_DSN_APPDB", cluster.dsn(None, "appdb", "disable"))
        .start();
    let pg = agent.addr("postgres");
    let conninfo = format!(
        "host={} port={} dbname=appdb user={PROXY_USER} sslmode=disable",
        pg.ip(),
        pg.port()
    );
    let tenant = || {
        psql(
            &conninfo,
            PROXY_PASSWORD,
            "SELECT current_setting('app.tenant');\n",
        )
    };
    let (code, out) = tenant();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("acme"), "{out}");

    std::fs::write(&agent.config_path, cfg("globex").to_yaml()).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(agent.pid() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(l) = agent.json_lines().into_iter().find(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload"))
        }) {
            break l;
        }
        assert!(Instant::now() < deadline, "{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(line["msg"], "config reloaded", "{line}");
    assert_eq!(line["changed"], "postgres", "{line}");
    let (code, out) = tenant();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("globex") && !out.contains("acme"), "{out}");
    assert_eq!(agent.signal(libc::SIGTERM).code(), Some(0));
}

/// SIGHUP to an agent on the embedded default config (no `--config`): nothing to re-read, so the
/// reload is logged as failed and counted, the agent keeps serving, and the config in force is
/// still the embedded one (`iron_agent_config_info{hash=""}`).
#[test]
fn sighup_without_config_file_is_a_logged_failure() {
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::with_config("")
        .args(&["run"])
        .env("IRON_AGENT_STATE_DIR", state.path().to_string_lossy())
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
        .start();
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let line = reload_agent(&agent, false).await;
        assert_eq!(
            line["msg"], "config reload failed; previous config kept",
            "{line}"
        );
        assert!(
            line["error"]
                .as_str()
                .unwrap_or_default()
                .contains("no config file to re-read"),
            "{line}"
        );
        let m = scrape_metrics(agent.addr("metrics")).await;
        assert_eq!(m.config_hash(), "");
        assert_eq!(
            m.value(r#"iron_agent_reloads_total{result="failure"}"#),
            Some(1.0)
        );
        // Still serving: the embedded config denies everything.
        let r = http_request(agent.addr("http"), get("example.com", "/")).await;
        assert_eq!(r.status, 403);
    });
}
