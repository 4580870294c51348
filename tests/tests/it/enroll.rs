//! `iron-agent init --enrollment-token` (and `install --enrollment-token`) against the real
//! `iron-control`: enroll, then run the written config and see a synced secret injected; the
//! token file's mode and no token in any output; the server's refusal codes; a second init
//! refused without --force; iron-proxy's single-dash spelling; the install dry run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::client::get;
use iron_agent_tests::control::Control;
use iron_agent_tests::{Agent, Origin, OriginKind, http_request};
use serde_json::{Value, json};

const SECRET: &str = "enrolled-secret-value-5d1f";
const KEY: &str = "mgmt-key-enroll-8a3e";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn agent(args: &[&str]) -> Out {
    let out = Command::new(agent_bin())
        .args(args)
        .env_remove("IRON_CONTROL_PLANE_URL")
        .env_remove("IRON_ENROLLMENT_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("spawn iron-agent");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An enrollment token; returns its value.
async fn enrollment_token(c: &Control, data: Value) -> String {
    let (status, v) = c
        .call(
            "POST",
            "/api/v1/enrollment_tokens",
            Some(json!({ "data": data })),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["data"]["token"].as_str().unwrap().to_string()
}

fn init(token: &str, url: &str, state: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "init",
        "--enrollment-token",
        token,
        "--control-plane",
        url,
        "--no-service",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    agent(&args)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The proxy id from init's `enrolled: proxy prx_... (` line.
fn proxy_id(out: &Out) -> String {
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("prx_"))
        .unwrap_or_else(|| panic!("no proxy id in {}", out.stdout))
        .to_string()
}

#[test]
fn enrolled_agent_syncs_and_injects_a_secret_and_keeps_tokens_out_of_output() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::start(dir.path());
        c.allow(&["localhost"]).await;
        let principal = c.principal("enrolled-host").await;
        let secret = c
            .secret("origin-key", SECRET, "X-Api-Key", "localhost")
            .await;
        c.grant(&principal, &secret).await;
        let token = enrollment_token(&c, json!({"tags": ["env:test"], "max_uses": 1})).await;
        let state = dir.path().join("state");
        let out = init(&token, &c.url(), &state, &["--name", "edge-1"]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(out.stdout.contains("tags: [env:test]"), "{}", out.stdout);
        let token_file = state.join("proxy-token");
        assert_eq!(mode(&token_file), 0o600);
        assert_eq!(mode(&state.join("config.yaml")), 0o600);
        let proxy_token = std::fs::read_to_string(&token_file).unwrap();
        let proxy_token = proxy_token.trim();
        assert!(proxy_token.starts_with("iprx_"), "unexpected token format");
        assert!(!out.all().contains(proxy_token), "proxy token printed");
        assert!(!out.all().contains(&token), "enrollment token printed");

        // The enrolled proxy is unassigned: assign it so the principal's grant reaches it.
        let id = proxy_id(&out);
        let (st, v) = c
            .call(
                "PATCH",
                &format!("/api/v1/proxies/{id}"),
                Some(json!({"data": {"principal_id": principal}})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["name"], "edge-1");
        assert_eq!(v["data"]["tags"], json!(["env:test"]));

        let origin = Origin::start(OriginKind::Http, None).await;
        let cfg = state.join("config.yaml");
        let agent = Agent::with_config("")
            .args(&["run", "--config", cfg.to_str().unwrap()])
            .env("IRON_DNS_LISTEN", "127.0.0.1:0")
            .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
            .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
            .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
            .env("IRON_MANAGEMENT_LISTEN", "127.0.0.1:0")
            .env("IRON_MANAGEMENT_API_KEY", KEY)
            // The origin is on loopback, which the default deny list guards: replace the list.
            .env("IRON_PROXY_UPSTREAM_DENY_CIDRS", "192.0.2.0/24")
            .start();
        let deadline = Instant::now() + Duration::from_secs(30);
        let reply = loop {
            let r = http_request(
                agent.addr("http"),
                get(&format!("localhost:{}", origin.port()), "/x"),
            )
            .await;
            if r.status == 200 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            reply.status,
            200,
            "{}; logs:\n{}",
            reply.text(),
            agent.logs()
        );
        assert_eq!(reply.echoed_header("x-api-key").as_deref(), Some(SECRET));
        let req = http::Request::builder()
            .uri("/v1/status")
            .header("host", "mgmt")
            .header("authorization", format!("Bearer {KEY}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let st = http_request(agent.addr("management"), req).await;
        let st: Value = serde_json::from_slice(&st.body).unwrap();
        assert_eq!(st["principal_id"], principal.as_str(), "{st}");
        assert_eq!(st["synced_once"], true);
        agent.assert_not_logged(proxy_token);
        agent.assert_not_logged(&token);
        agent.assert_not_logged(SECRET);
    });
}

#[test]
fn refusals_name_the_server_code_and_write_nothing() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::start(dir.path());
        let state = dir.path().join("state");
        let check = |out: &Out, needle: &str, token: &str| {
            assert_eq!(out.code, 1, "{}", out.all());
            assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
            assert!(!out.all().contains(token), "token printed");
            assert!(!state.join("proxy-token").exists());
        };

        let invalid = "00".repeat(32);
        check(
            &init(&invalid, &c.url(), &state, &[]),
            "invalid_token",
            &invalid,
        );

        let short = enrollment_token(&c, json!({"expires_in_seconds": 1})).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        check(
            &init(&short, &c.url(), &state, &[]),
            "token_expired",
            &short,
        );

        let once = enrollment_token(&c, json!({"max_uses": 1})).await;
        let first = init(&once, &c.url(), &dir.path().join("first"), &[]);
        assert_eq!(first.code, 0, "{}", first.all());
        check(
            &init(&once, &c.url(), &state, &[]),
            "token_exhausted",
            &once,
        );

        // Nothing listens on port 1 of loopback.
        let out = init(&once, "http://127.0.0.1:1", &state, &[]);
        check(&out, "control plane http://127.0.0.1:1 unreachable", &once);
        // Plain HTTP off loopback is refused before anything is sent.
        let out = init(&once, "http://cp.example", &state, &[]);
        check(&out, "--control-plane: ", &once);
        assert!(out.stderr.contains("--allow-insecure"), "{}", out.stderr);
    });
}

#[test]
fn second_init_is_refused_without_force_and_single_dash_spelling_works() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::start(dir.path());
        let token = enrollment_token(&c, json!({"max_uses": 0})).await;
        let state = dir.path().join("state");
        let s = state.to_str().unwrap();
        let url = c.url();
        // iron-proxy's spelling.
        let go = [
            "init",
            "-enrollment-token",
            &token,
            "-control-plane",
            &url,
            "-state-dir",
            s,
            "-no-service",
        ];
        let out = agent(&go);
        assert_eq!(out.code, 0, "{}", out.all());
        let before = std::fs::read_to_string(state.join("proxy-token")).unwrap();

        let again = agent(&go);
        assert_eq!(again.code, 1, "{}", again.all());
        assert!(
            again.stderr.contains("already enrolled") && again.stderr.contains("--force"),
            "{}",
            again.stderr
        );
        assert_eq!(
            std::fs::read_to_string(state.join("proxy-token")).unwrap(),
            before
        );
        // The refusal spent no use of the token.
        let (_, list) = c.call("GET", "/api/v1/enrollment_tokens", None).await;
        assert_eq!(list["data"][0]["uses"], 1, "{list}");

        let mut forced = go.to_vec();
        forced.push("-force");
        let out = agent(&forced);
        assert_eq!(out.code, 0, "{}", out.all());
        let after = std::fs::read_to_string(state.join("proxy-token")).unwrap();
        assert_ne!(after, before);
        assert_eq!(mode(&state.join("proxy-token")), 0o600);
    });
}

#[test]
fn install_with_enrollment_token_dry_run_writes_the_managed_config() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let c = Control::start(dir.path());
        let token = enrollment_token(&c, json!({"max_uses": 0})).await;
        let root = dir.path().join("root");
        let r = root.to_str().unwrap();
        let url = c.url();
        let args = [
            "install",
            "--enrollment-token",
            &token,
            "--control-plane",
            &url,
            "--root",
            r,
        ];
        let out = agent(&args);
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(!out.all().contains(&token));
        let cfg = std::fs::read_to_string(root.join("etc/iron-agent/config.yaml")).unwrap();
        assert!(cfg.contains(&format!("url: \"{url}\"")), "{cfg}");
        assert!(
            cfg.contains("token_file: \"/var/lib/iron-agent/proxy-token\""),
            "{cfg}"
        );
        assert!(
            cfg.contains("mode: ebpf") && !cfg.contains("transforms"),
            "{cfg}"
        );
        let token_file = root.join("var/lib/iron-agent/proxy-token");
        assert_eq!(mode(&token_file), 0o600);
        let check = agent(&[
            "check-config",
            "--config",
            root.join("etc/iron-agent/config.yaml").to_str().unwrap(),
            "--no-host-checks",
        ]);
        assert_eq!(check.code, 0, "{}", check.all());

        // init on the same (dry-run) host: refused, then replaced with --force.
        let init = |extra: &[&str]| {
            let mut a = vec!["init", "--enrollment-token", &token, "--control-plane"];
            a.extend([url.as_str(), "--root", r]);
            a.extend_from_slice(extra);
            agent(&a)
        };
        let again = init(&[]);
        assert_eq!(again.code, 1, "{}", again.all());
        assert!(
            again.stderr.contains("already enrolled"),
            "{}",
            again.stderr
        );
        assert_eq!(init(&["--force"]).code, 0);

        // uninstall removes the token with the rest.
        let un = agent(&["uninstall", "--root", r, "--purge"]);
        assert_eq!(un.code, 0, "{}", un.all());
        assert!(!token_file.exists());
    });
}
