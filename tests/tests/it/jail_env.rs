//! `iron-agent run -- CMD` does not hand CMD the credentials it injects (issue 11 item 16):
//! every variable a secret source of the config reads is removed from CMD's environment,
//! except those named with `--keep-env`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use iron_agent_tests::agent::{agent_command, generate_ca, wait_finished};
use iron_agent_tests::config::Log;
use iron_agent_tests::netns::root_turn;
use iron_agent_tests::{AgentConfig, Transform};
use serde_json::json;

const GH_VALUE: &str = "ghp-jail-secret-5d1e";

#[test]
fn jailed_command_does_not_see_secret_source_variables() {
    let Some(_turn) = root_turn("attaches eBPF programs to a jail cgroup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = generate_ca(dir.path());
    let cfg = AgentConfig::jail(&c, &k)
        .transforms([
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
        ])
        .with(|c| {
            c.log = Some(Log {
                level: "info".into(),
            })
        })
        .write(&dir.path().join("jail.yaml"));

    let child = agent_command(&["run", "--config", cfg.to_str().unwrap()])
        .args(["--keep-env", "IA_NPM_TOKEN", "--", "/usr/bin/env"])
        .env("IA_GH_TOKEN", GH_VALUE)
        .env("IA_NPM_TOKEN", "npm-kept-value")
        .env("IA_UNRELATED", "still-here")
        .spawn()
        .unwrap();
    let out = wait_finished(child, Duration::from_secs(60), "iron-agent run");
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.code, 0, "{stdout}\n{stderr}");
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
