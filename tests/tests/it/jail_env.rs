//! `iron-agent run -- CMD` does not hand CMD the credentials it injects (issue 11 item 16):
//! every variable a secret source of the config reads is removed from CMD's environment,
//! except those named with `--keep-env`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::config::{Dns, Log, Proxy, Tls};
use iron_agent_tests::netns::skip_unless_root;
use iron_agent_tests::{AgentConfig, Transform};
use serde_json::json;

const GH_VALUE: &str = "ghp-jail-secret-5d1e";

#[test]
fn jailed_command_does_not_see_secret_source_variables() {
    if skip_unless_root("attaches eBPF programs to a jail cgroup") {
        return;
    }
    let _g = iron_agent_tests::machine_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let ca = Command::new(agent_bin())
        .args(["generate-ca", "--outdir", d])
        .output()
        .unwrap();
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    let config = AgentConfig {
        dns: Dns {
            proxy_ip: Some("127.0.0.1".into()),
            ..Dns::default()
        },
        proxy: Proxy::default(),
        tls: Tls::mitm(&dir.path().join("ca.crt"), &dir.path().join("ca.key")),
        metrics: None,
        transforms: vec![
            Transform::allowlist(&["a.test", "b.test"]),
            Transform::secrets(json!([
                {
                    "source": {"type": "env", "var": "IA_GH_TOKEN"},
                    "inject": {"header": "Authorization"},
                    "rules": [{"host": "a.test"}],
                },
                {
                    "source": {"type": "env", "var": "IA_NPM_TOKEN"},
                    "inject": {"header": "X-Npm"},
                    "rules": [{"host": "b.test"}],
                },
            ])),
        ],
        mcp: None,
        mcp_gateway: None,
        intercept: None,
        log: Some(Log {
            level: "info".into(),
        }),
        postgres: None,
    };
    let cfg = dir.path().join("jail.yaml");
    std::fs::write(&cfg, config.to_yaml()).unwrap();

    let mut child = Command::new(agent_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .args(["--keep-env", "IA_NPM_TOKEN", "--", "/usr/bin/env"])
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .env("IA_GH_TOKEN", GH_VALUE)
        .env("IA_NPM_TOKEN", "npm-kept-value")
        .env("IA_UNRELATED", "still-here")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("iron-agent run did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The command ran (its environment is printed) without the injected credential.
    assert!(stdout.contains("IA_UNRELATED=still-here"), "{stdout}");
    assert!(!stdout.contains("IA_GH_TOKEN"), "{stdout}");
    assert!(!stdout.contains(GH_VALUE), "{stdout}");
    // --keep-env is the explicit exception.
    assert!(stdout.contains("IA_NPM_TOKEN=npm-kept-value"), "{stdout}");
    // The startup log says which variables were removed, never their values.
    let line = stderr
        .lines()
        .find(|l| l.contains("removed from the command's environment"))
        .unwrap_or_else(|| panic!("no startup line: {stderr}"));
    assert!(line.contains("IA_GH_TOKEN"), "{line}");
    assert!(!stderr.contains(GH_VALUE), "{stderr}");
}
