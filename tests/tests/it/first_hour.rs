//! The first hour of a new user: `check-config` catches what `run` would fail on (with field
//! paths), a failed first start in eBPF mode leaves no programs behind, `detach` releases them,
//! and the messages on the way say what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::config::Postgres;
use iron_agent_tests::ebpf_world::{PIN_DIR, Unpin, intercept};
use iron_agent_tests::netns::root_turn;
use iron_agent_tests::postgres::proxy_block;
use iron_agent_tests::{Agent, AgentConfig, TestCa, Transform};
use serde_json::json;

fn iron(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &std::path::Path, cfg: &AgentConfig) -> String {
    let p = dir.join("c.yaml");
    std::fs::write(&p, cfg.to_yaml()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn check_config_rejects_what_run_would_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let good = AgentConfig::loopback(&c, &k).transforms([Transform::allowlist(&["a.com"])]);
    let path = write_config(dir.path(), &good);
    let (code, _, err) = iron(&["check-config", "--config", &path]);
    assert_eq!(code, 0, "{err}");

    // Missing CA files: each field named, with the command that makes them.
    let missing = dir.path().join("nope");
    let cfg = AgentConfig::loopback(&missing.join("ca.crt"), &missing.join("ca.key"));
    let path = write_config(dir.path(), &cfg);
    let (code, _, err) = iron(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error: tls.ca_cert: cannot read"), "{err}");
    assert!(err.contains("error: tls.ca_key: cannot read"), "{err}");
    assert!(
        err.contains(&format!(
            "iron-agent generate-ca --outdir {}",
            missing.display()
        )),
        "{err}"
    );
    // ... which `--no-host-checks` does not look at.
    let (code, _, err) = iron(&["check-config", "--config", &path, "--no-host-checks"]);
    assert_eq!(code, 0, "{err}");

    // A cert and a key of two different CAs.
    let other = TestCa::new("other");
    let odir = dir.path().join("other");
    std::fs::create_dir_all(&odir).unwrap();
    let (_, other_key) = other.write(&odir);
    let path = write_config(dir.path(), &AgentConfig::loopback(&c, &other_key));
    let (code, _, err) = iron(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error: tls.ca_cert/tls.ca_key:"), "{err}");

    // Unknown users, a cgroup path that is not cgroup v2, a file secret that is not there.
    let cfg = AgentConfig {
        intercept: Some(json!({
            "mode": "ebpf",
            "default": "exempt",
            "governed": {"users": ["no-such-user-fh"], "cgroups": [dir.path()]},
            "policies": [{"name": "p", "users": ["also-missing-fh"], "transforms": []}],
        })),
        ..AgentConfig::loopback(&c, &k)
    }
    .transforms([Transform::secrets(json!([{
        "source": {"type": "file", "path": dir.path().join("missing-token")},
        "inject": {"header": "X-Api-Key"},
        "rules": [{"host": "a.com"}],
    }]))]);
    let path = write_config(dir.path(), &cfg);
    let (code, _, err) = iron(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "error: intercept.governed.users[0]: unknown user \"no-such-user-fh\"",
        "error: intercept.policies[0].users[0]: unknown user \"also-missing-fh\"",
        "error: intercept.governed.cgroups[0]:",
        "is not a cgroup v2 directory",
        "error: transforms[0].config.secrets[0].source.path: cannot read",
    ] {
        assert!(err.contains(want), "missing {want:?}:\n{err}");
    }

    // The PostgreSQL proxy's listen address names a host: `run` used to fail on it only after
    // attaching; now check-config and `run` refuse it up front.
    let pg: Postgres = proxy_block("db.internal:6432", &[("app", None, &[])]);
    let cfg = AgentConfig {
        postgres: Some(pg.clone()),
        ..AgentConfig::loopback(&c, &k)
    };
    let path = write_config(dir.path(), &cfg);
    let pg_env = [
        ("PG_PROXY_PASSWORD", "pw"),
        ("PG_DSN_APP", "postgres://u:p@127.0.0.1:9/app"),
    ];
    let out = Command::new(agent_bin())
        .args(["check-config", "--config", &path])
        .envs(pg_env)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = "error: postgres.listen: \"db.internal\" is not an IP address";
    assert!(err.contains(want), "{err}");
    let mut builder = Agent::with(&cfg);
    for (k, v) in pg_env {
        builder = builder.env(k, v);
    }
    let mut agent = builder.start();
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(agent.logs().contains(want), "{}", agent.logs());
    assert!(!agent.logs().contains("listening"), "{}", agent.logs());

    // Its password variable unset: refused when the config is loaded, before any check.
    let mut pg = pg;
    pg.listen = "127.0.0.1:0".into();
    pg.client.password_env = "FH_UNSET_PG_PASSWORD".into();
    let cfg = AgentConfig {
        postgres: Some(pg),
        ..AgentConfig::loopback(&c, &k)
    };
    let path = write_config(dir.path(), &cfg);
    let (code, _, err) = iron(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "error: postgres: client.password_env \"FH_UNSET_PG_PASSWORD\" is not set in the environment"
        ),
        "{err}"
    );
}

/// An unreadable `file` secret source: `check-config` refuses it, `run` starts and says so at
/// WARN with the field path (the source is retried; a file mounted later is picked up).
#[test]
fn unreadable_file_secret_errors_in_check_config_and_warns_in_run() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let missing = dir.path().join("token-not-yet-mounted");
    let cfg = AgentConfig::loopback(&c, &k).transforms([
        Transform::allowlist(&["a.com"]),
        Transform::secrets(json!([{
            "source": {"type": "file", "path": missing},
            "inject": {"header": "X-Api-Key"},
            "rules": [{"host": "a.com"}],
        }])),
    ]);
    let field = "transforms[1].config.secrets[0].source.path: cannot read";
    let path = write_config(dir.path(), &cfg);
    let (code, _, err) = iron(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("error: {field}")), "{err}");

    let mut agent = Agent::with(&cfg).start();
    let logs = agent.logs();
    let warned = logs.lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
            v["level"] == "WARN" && v["msg"].as_str().is_some_and(|m| m.starts_with(field))
        })
    });
    assert!(warned, "{logs}");
    assert!(logs.contains("iron-agent starting"), "{logs}");
    assert_eq!(agent.signal(libc::SIGTERM).code(), Some(0));
}

#[test]
fn ebpf_without_privileges_says_which_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let cfg = AgentConfig {
        intercept: Some(json!({"mode": "ebpf", "default": "exempt"})),
        ..AgentConfig::loopback(&c, &k)
    };
    let path = write_config(dir.path(), &cfg);
    // An empty bounding set leaves even root without capabilities after exec.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-all", "--inh-caps", "-all", "--"])
        .arg(agent_bin())
        .args(["check-config", "--config", &path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("intercept.mode: ebpf: needs root or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN"),
        "{err}"
    );
}

#[test]
fn run_without_separator_hints_at_it() {
    let (code, _, err) = iron(&["run", "--user", "nobody", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hint: to run a command under the agent, put it after `--`: iron-agent run --user nobody -- true"),
        "{err}"
    );
}

#[test]
fn version_and_dash_dash_version_agree() {
    let (code, a, _) = iron(&["version"]);
    assert_eq!(code, 0);
    let (code, b, _) = iron(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(a, b);
    assert_eq!(
        a.trim(),
        format!("iron-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_has_examples_and_docs_pointer() {
    for cmd in [
        "run",
        "check-config",
        "install",
        "detach",
        "generate-ca",
        "status",
        "version",
    ] {
        let (code, out, err) = iron(&[cmd, "--help"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Example"), "{cmd}: {out}");
        assert!(out.contains("docs/"), "{cmd}: {out}");
    }
    let (_, out, _) = iron(&["install", "--help"]);
    assert!(
        out.contains("default: redirect") && out.contains("--govern-user"),
        "{out}"
    );
}

#[test]
fn fatal_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = AgentConfig::loopback(&c, &k)
        .with(|c| c.proxy.https_listen = Some(format!("127.0.0.1:{port}")));
    let mut agent = Agent::with(&cfg).start();
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    let logs = agent.logs();
    let needle = format!("127.0.0.1:{port}");
    let mentions = logs.lines().filter(|l| l.contains(&needle)).count();
    assert_eq!(mentions, 1, "{logs}");
    assert!(
        logs.contains(&format!("error: https listen {needle}")),
        "{logs}"
    );
}

#[test]
fn startup_lines_warn_about_lifted_guard_and_name_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    // loopback() sets `upstream_deny_cidrs: []`.
    let mut agent = Agent::with(&AgentConfig::loopback(&c, &k)).start();
    let logs = agent.logs();
    assert!(
        logs.contains("proxy.upstream_deny_cidrs: setting it replaces the default guard")
            && logs.contains("169.254.169.254/32"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("MITM CA: reusing {}", c.display()))
            && logs.contains("clients must trust"),
        "{logs}"
    );
    agent.signal(libc::SIGTERM);

    // The embedded default config: generated on the first start, reused on the second.
    let state = tempfile::tempdir().unwrap();
    let start = || {
        Agent::with_config("")
            .args(&["run"])
            .env("IRON_AGENT_STATE_DIR", state.path().to_string_lossy())
            .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
            .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
            .env("IRON_DNS_LISTEN", "127.0.0.1:0")
            .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
            .start()
    };
    let cert = state.path().join("ca.crt");
    let mut first = start();
    assert!(
        first
            .logs()
            .contains(&format!("MITM CA: generated {}", cert.display())),
        "{}",
        first.logs()
    );
    assert!(!first.logs().contains("upstream_deny_cidrs"));
    first.signal(libc::SIGTERM);
    let mut second = start();
    assert!(
        second
            .logs()
            .contains(&format!("MITM CA: reusing {}", cert.display())),
        "{}",
        second.logs()
    );
    second.signal(libc::SIGTERM);
}

#[test]
fn connect_on_the_http_and_https_listeners_explains_the_405() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let agent = Agent::with(
        &AgentConfig::loopback(&c, &k).transforms([Transform::allowlist(&["example.com"])]),
    )
    .start();
    let rt = iron_agent_tests::runtime();
    let r = rt.block_on(iron_agent_tests::http_request(
        agent.addr("http"),
        http::Request::builder()
            .method("CONNECT")
            .uri("example.com:443")
            .header("host", "example.com:443")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    ));
    assert_eq!(r.status, 405);
    assert_explains_the_tunnel_listener(&r.text());

    // The same answer from the HTTPS listener (CONNECT inside the TLS it terminates).
    let r = rt
        .block_on(iron_agent_tests::client::https_request(
            agent.addr("https"),
            "example.com",
            ca.client_config(),
            http::Request::builder()
                .method("CONNECT")
                .uri("example.com:443")
                .header("host", "example.com:443")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        ))
        .unwrap();
    assert_eq!(r.status, 405);
    assert_explains_the_tunnel_listener(&r.text());
    let audits = agent.audits_where(2, |a| a["reason"] == "connect_not_supported_here");
    assert!(audits.iter().all(|a| a["status_code"] == 405), "{audits:?}");
}

/// The 405 body fits the listener that sends it: it names what to do, and does not claim to
/// come from a plain-HTTP listener (the HTTPS listener sends it too).
fn assert_explains_the_tunnel_listener(body: &str) {
    assert!(
        body.contains("proxy.tunnel_listen") && body.contains("https_proxy"),
        "{body}"
    );
    assert!(body.contains("does not tunnel (CONNECT)"), "{body}");
    assert!(!body.contains("plain-HTTP listener"), "{body}");
}

#[test]
fn failing_upstream_resolver_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    // A resolver that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_tcp = std::net::TcpListener::bind(silent.local_addr().unwrap()).ok();
    let addr = silent.local_addr().unwrap();
    let cfg = AgentConfig {
        dns: iron_agent_tests::config::Dns {
            enabled: Some(true),
            listen: Some("127.0.0.1:0".into()),
            proxy_ip: Some("127.0.0.1".into()),
            upstream_resolver: Some(addr.to_string()),
            ..Default::default()
        },
        ..AgentConfig::loopback(&c, &k)
    }
    .transforms([Transform::allowlist(&["slow.example"])]);
    let agent = Agent::with(&cfg).start();
    let rt = iron_agent_tests::runtime();
    let r = rt.block_on(iron_agent_tests::http_request(
        agent.addr("http"),
        iron_agent_tests::client::get("slow.example", "/"),
    ));
    assert!(r.status >= 500, "{}", r.status);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.logs().contains("upstream DNS resolution is") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = agent.logs();
    assert!(logs.contains("upstream DNS resolution is"), "{logs}");
    assert!(logs.contains(&addr.to_string()), "{logs}");
    drop(silent_tcp);
}

fn ebpf_config(
    c: &std::path::Path,
    k: &std::path::Path,
    governed: serde_json::Value,
) -> AgentConfig {
    AgentConfig {
        intercept: Some(intercept(json!({"governed": governed}))),
        ..AgentConfig::loopback(c, k)
    }
}

#[test]
fn failed_first_start_leaves_no_pin_and_detach_releases() {
    let Some(_turn) = root_turn("eBPF programs") else {
        return;
    };
    // Where the agent pins ([`intercept`]): absent now, removed whatever happens.
    let _unpin = Unpin::fresh();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());

    // Unknown user: refused before anything is attached.
    let cfg = ebpf_config(&c, &k, json!({"users": ["no-such-user-fh"]}));
    let mut agent = Agent::with(&cfg).start();
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(
        agent
            .logs()
            .contains("error: intercept.governed.users[0]: unknown user \"no-such-user-fh\""),
        "{}",
        agent.logs()
    );
    assert!(!std::path::Path::new(PIN_DIR).exists(), "pins left behind");

    // A failure after attaching (the PostgreSQL proxy's port is taken): the first start takes
    // its programs away again.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pg: Postgres = proxy_block(
        &taken.local_addr().unwrap().to_string(),
        &[("app", None, &[])],
    );
    let mut cfg = ebpf_config(&c, &k, json!({"uids": [59999]}));
    cfg.postgres = Some(pg);
    let start_pg = |cfg: &AgentConfig| {
        Agent::with(cfg)
            .env("PG_PROXY_PASSWORD", "pw")
            .env("PG_DSN_APP", "postgres://u:p@127.0.0.1:9/app")
            .start()
    };
    let mut agent = start_pg(&cfg);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(
        agent.logs().contains("eBPF interception attached"),
        "{}",
        agent.logs()
    );
    assert!(
        !std::path::Path::new(PIN_DIR).exists(),
        "pins left behind: {}",
        agent.logs()
    );

    // A good start pins; stopping says traffic stays denied and names `detach`.
    let good = ebpf_config(&c, &k, json!({"uids": [59999]}));
    let mut agent = Agent::with(&good).start_attached();
    assert_eq!(agent.signal(libc::SIGTERM).code(), Some(0));
    assert!(
        agent
            .logs()
            .contains("governed traffic stays denied until the agent runs again or `iron-agent detach` removes them"),
        "{}",
        agent.logs()
    );
    assert!(std::path::Path::new(PIN_DIR).join("links").exists());

    // The same failure after an earlier good start: those pins are not ours to remove.
    let mut agent = start_pg(&cfg);
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(std::path::Path::new(PIN_DIR).join("links").exists());

    // `detach` releases them.
    let (code, out, err) = iron(&["detach", "--pin-dir", PIN_DIR]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(PIN_DIR), "{out}");
    assert!(!std::path::Path::new(PIN_DIR).exists());
    let (code, out, _) = iron(&["detach", "--pin-dir", PIN_DIR]);
    assert_eq!(code, 0);
    assert!(out.contains("none pinned"), "{out}");
}

#[test]
fn jail_names_a_missing_command() {
    let Some(_turn) = root_turn("eBPF programs and a cgroup") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(agent_bin())
        .args(["run", "--", "/nonexistent/fh-tool", "x"])
        .env("IRON_AGENT_STATE_DIR", state.path())
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(
        err.contains("error: command not found: /nonexistent/fh-tool"),
        "{err}"
    );
}
