//! Every CLI command and its exit status, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::{Agent, AgentConfig, TestCa, Transform};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin())
        .args(args)
        .output()
        .expect("run iron-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_forms() {
    let (code, out, _) = run(&["version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        concat!("iron-agent ", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn generate_ca_writes_files_with_modes_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let (code, stdout, stderr) = run(&["generate-ca", "--outdir", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ca.crt") && stdout.contains("ca.key"));
    let crt = std::fs::metadata(out.join("ca.crt")).unwrap();
    let key = std::fs::metadata(out.join("ca.key")).unwrap();
    assert_eq!(crt.permissions().mode() & 0o777, 0o644);
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(out.join("ca.key")).unwrap();
    // Go-style single-dash flags work too; an existing CA is never overwritten.
    let (code, _, stderr) = run(&[
        "generate-ca",
        "-outdir",
        out.to_str().unwrap(),
        "-alg",
        "ed25519",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(out.join("ca.key")).unwrap(), before);

    for alg in ["rsa4096", "ed25519", "ecdsa-p256"] {
        let d = dir.path().join(alg);
        let (code, _, stderr) = run(&[
            "generate-ca",
            "--outdir",
            d.to_str().unwrap(),
            "--alg",
            alg,
            "--name",
            "Test CA",
            "--expiry-hours",
            "24",
        ]);
        assert_eq!(code, 0, "{alg}: {stderr}");
        let pem = std::fs::read_to_string(d.join("ca.crt")).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
    }
    let (code, _, _) = run(&[
        "generate-ca",
        "--outdir",
        dir.path().join("x").to_str().unwrap(),
        "--alg",
        "dsa",
    ]);
    assert_eq!(code, 2, "clap usage error");
}

#[test]
fn check_config_ok_and_errors_name_fields() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        AgentConfig::loopback(&c, &k)
            .transforms([Transform::allowlist(&["a.com"])])
            .to_yaml(),
    )
    .unwrap();
    let (code, _, stderr) = run(&["check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "dns:\n  listen: \"127.0.0.1:0\"\nproxy:\n  upstream_response_header_timeout: \"soon\"\nlog:\n  level: loud\ntransforms:\n  - name: allowlist\n    config:\n      domain: [a.com]\n  - name: allowlist\n    config:\n      cidrs: [\"10.0.0.1\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("transforms[0].config.domain"), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");
    assert!(stderr.contains("log.level"), "{stderr}");
    assert!(
        stderr.contains("upstream_response_header_timeout"),
        "{stderr}"
    );
    assert!(stderr.contains("transforms[1].config.cidrs"), "{stderr}");
    assert!(stderr.contains("must be CIDR notation"), "{stderr}");
    assert!(
        stderr.contains("(line "),
        "errors carry locations: {stderr}"
    );

    let missing = dir.path().join("missing.yaml");
    std::fs::write(&missing, "tls:\n  mode: sni-only\n").unwrap();
    let (code, _, stderr) = run(&["check-config", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("dns.proxy_ip"), "{stderr}");

    let (code, _, stderr) = run(&["check-config", "--config", "/nonexistent/iron.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/iron.yaml"), "{stderr}");
}

#[test]
fn sigterm_is_a_clean_exit_and_go_style_flag_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let cfg = AgentConfig::loopback(&c, &k).transforms([Transform::allowlist(&[])]);
    let mut agent = Agent::with(&cfg).args(&["-config", "{config}"]).start();
    assert!(agent.listeners.contains_key("http") && agent.listeners.contains_key("https"));
    assert!(agent.listeners.contains_key("metrics"));
    let st = agent.signal(libc::SIGTERM);
    assert_eq!(st.code(), Some(0), "{}", agent.logs());
    assert!(agent.logs().contains("iron-agent stopped"));

    let mut agent = Agent::with(&cfg).args(&["--config", "{config}"]).start();
    assert_eq!(agent.signal(libc::SIGINT).code(), Some(0));
}

#[test]
fn fatal_startup_errors_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    // A port that is already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = AgentConfig::loopback(&c, &k)
        .with(|c| c.proxy.http_listen = Some(format!("127.0.0.1:{port}")));
    let mut agent = Agent::with(&cfg).start();
    let st = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "{}", agent.logs());
    assert!(
        agent.logs().contains(&format!("127.0.0.1:{port}")),
        "{}",
        agent.logs()
    );

    // A CA file that does not exist.
    let cfg = AgentConfig::loopback(&dir.path().join("nope.crt"), &k);
    let mut agent = Agent::with(&cfg).start();
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(agent.logs().contains("nope.crt"), "{}", agent.logs());

    // A config error.
    let mut agent = Agent::with_config("log:\n  level: shouting\n").start();
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(agent.logs().contains("log.level"), "{}", agent.logs());
}

#[test]
fn embedded_default_config_denies_everything() {
    let state = tempfile::tempdir().unwrap();
    let mut agent = Agent::with_config("")
        .args(&["run"])
        .env("IRON_AGENT_STATE_DIR", state.path().to_string_lossy())
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
        .start();
    assert!(
        agent.logs().contains("embedded default config"),
        "{}",
        agent.logs()
    );
    assert!(state.path().join("ca.crt").exists());
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let r = iron_agent_tests::http_request(
            agent.addr("http"),
            iron_agent_tests::client::get("example.com", "/"),
        )
        .await;
        assert_eq!(r.status, 403);
    });
    assert_eq!(agent.signal(libc::SIGTERM).code(), Some(0));
}

/// A transform that validates but cannot be built (here: a gRPC service CA file that does not
/// exist) is reported by `check-config` and refuses startup: running without it would drop a
/// policy the operator wrote.
#[test]
fn transforms_that_cannot_be_built_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let mut cfg = AgentConfig::loopback(&c, &k);
    cfg.transforms.push(iron_agent_tests::Transform::new(
        "grpc",
        serde_json::json!({"name": "svc", "target": "localhost:1",
                           "tls": {"enabled": true, "ca_cert": "/nonexistent/ca.pem"}}),
    ));
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, cfg.to_yaml()).unwrap();
    let out = Command::new(agent_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    let mut agent = Agent::with(&cfg).start();
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(
        agent.logs().contains("/nonexistent/ca.pem"),
        "{}",
        agent.logs()
    );
}

/// iron-proxy writes Ed25519 keys as PKCS#8 v1, which OpenSSL reads; ring's v2 form (with the
/// public key) it refuses.
#[test]
fn generate_ca_ed25519_key_is_readable_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ed");
    let (code, _, stderr) = run(&[
        "generate-ca",
        "--outdir",
        out.to_str().unwrap(),
        "--alg",
        "ed25519",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let key = out.join("ca.key");
    let check = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl is installed");
    assert!(
        check.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // And the agent itself runs with that CA.
    let cfg = AgentConfig::loopback(&out.join("ca.crt"), &key);
    let mut agent = Agent::with(&cfg).start();
    assert!(
        agent.logs().contains("iron-agent starting"),
        "{}",
        agent.logs()
    );
    agent.signal(libc::SIGTERM);
}
