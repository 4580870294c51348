//! Issue 11 item 8, identity precedence: with nested cgroups the innermost listed one decides,
//! and an `exempt` cgroup does not free a uid that is governed by its own entry. `check-config`
//! warns when an exempt cgroup holds the places where governed users' work runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use iron_agent_tests::TestCa;
use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::ebpf_world::{World, intercept};
use iron_agent_tests::netns::{TestCgroup, TestUser, py_connect};
use serde_json::json;

const WHY: &str = "eBPF programs, test users, nested cgroups, a network namespace";

/// Python: HTTPS GET `path` to api.test at its real address (no DNS needed), trusting `ca`;
/// prints the status code or the error.
fn py_https_api(ca: &str, path: &str) -> String {
    format!(
        "import socket,ssl\ntry:\n  c=ssl.create_default_context(cafile='{ca}')\n  s=c.wrap_socket(socket.create_connection(('10.231.0.2',443),10),server_hostname='api.test')\n  s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: api.test\\r\\nConnection: close\\r\\n\\r\\n')\n  print(s.recv(100).split(b' ')[1].decode())\nexcept Exception as e:\n  print(type(e).__name__, e)"
    )
}

#[test]
fn innermost_cgroup_decides_and_exempt_does_not_free_a_governed_uid() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u4 = TestUser::ensure("iatest4");
    // Dropped in reverse order: children before their parent.
    let outer = TestCgroup::create("iatest-prec-outer");
    let inner = TestCgroup::create("iatest-prec-outer/inner");
    let exempt = TestCgroup::create("iatest-prec-outer/exempt");
    let mitm = TestCa::new("precedence MITM CA");
    let mut cfg = world.config(&mitm);
    cfg.intercept = Some(intercept(json!({
        "governed": {"users": ["iatest1"]},
        "exempt": {"cgroups": [exempt.path.to_string_lossy()]},
        "policies": [
            {
                "name": "outer",
                "cgroups": [outer.path.to_string_lossy()],
                "transforms": [{"name": "allowlist", "config": {"domains": ["other.test"]}}],
            },
            {
                "name": "inner",
                "cgroups": [inner.path.to_string_lossy()],
                "transforms": [{"name": "allowlist", "config": {"domains": ["api.test"]}}],
            },
        ],
    })));
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();
    let ca = ca.to_str().unwrap();

    // The outer cgroup's policy does not allow api.test ...
    let out = outer.py(&u4, &py_https_api(ca, "/outer"));
    assert_eq!(out, "403", "{}", agent.logs());
    let a = agent.audit_where(|a| a["path"] == "/outer");
    assert_eq!(a["policy"], "outer");
    // ... the inner one, nested in it, does: a process in the inner cgroup gets the inner policy.
    let out = inner.py(&u4, &py_https_api(ca, "/inner"));
    assert_eq!(out, "200", "{}", agent.logs());
    let a = agent.audit_where(|a| a["path"] == "/inner");
    assert_eq!(a["policy"], "inner");
    assert_eq!(a["uid"], u4.uid);

    // An exempt cgroup nested in a governed one exempts a uid without an entry of its own:
    // a direct connection to another port goes through untouched (control) ...
    let plain = "10.231.0.2:8080".parse().unwrap();
    assert_eq!(exempt.py(&u4, &py_connect(plain)), "ok");
    // ... but a governed user's process placed there stays governed (denied, not free).
    assert_eq!(exempt.py(&u1, &py_connect(plain)), "EPERM");
    // And a governed user in a policy cgroup gets that cgroup's policy (cgroups decide).
    let out = inner.py(&u1, &py_https_api(ca, "/u1-inner"));
    assert_eq!(out, "200");
    let a = agent.audit_where(|a| a["path"] == "/u1-inner");
    assert_eq!(a["policy"], "inner");
    drop(agent);
}

#[test]
fn check_config_warns_about_exempt_cgroups_holding_cron_at_and_user_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let write = |intercept: &str| {
        std::fs::write(
            &path,
            format!(
                "dns:\n  proxy_ip: 10.0.0.2\ntls:\n  mode: sni-only\ntransforms:\n  - name: allowlist\n    config:\n      domains: [a.test]\nintercept:\n  mode: ebpf\n{intercept}"
            ),
        )
        .unwrap();
    };
    let check = || {
        let out = Command::new(agent_bin())
            .args(["check-config", "--no-host-checks", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write("  exempt:\n    cgroups: [/sys/fs/cgroup/system.slice, /sys/fs/cgroup/user.slice]\n");
    let (code, stderr) = check();
    assert_eq!(code, Some(0), "a warning, not an error: {stderr}");
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: intercept.exempt.cgroups"))
        .collect();
    assert_eq!(warned.len(), 2, "{stderr}");
    assert!(
        warned[0].contains("system.slice/cron.service (cron jobs)"),
        "{stderr}"
    );
    assert!(
        warned[0].contains("system.slice/atd.service (at jobs)"),
        "{stderr}"
    );
    assert!(warned[1].contains("cgroups[1]"), "{stderr}");
    assert!(warned[1].contains("systemd user services"), "{stderr}");

    // Control: a service cgroup no user's work lands in is fine.
    write("  exempt:\n    cgroups: [/sys/fs/cgroup/system.slice/backup.service]\n");
    let (code, stderr) = check();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("intercept.exempt"), "{stderr}");
}
