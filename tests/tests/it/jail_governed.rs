//! Issue 11 item 9: while `iron-agent run --user U -- CMD` runs, U stays governed outside the
//! jail's cgroup too. A second process of U started by root outside the jail (standing in for
//! cron, at or `ssh localhost`) is denied, not free; after the jail ends U is free again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::config::{Dns, Proxy, Tls};
use iron_agent_tests::ebpf_world::{World, py};
use iron_agent_tests::netns::{TestUser, py_connect, skip_unless_root};
use iron_agent_tests::{AgentConfig, Transform};

#[test]
fn jailed_user_stays_governed_outside_the_jail_cgroup() {
    if skip_unless_root("attaches eBPF programs, test users, a network namespace") {
        return;
    }
    let _g = iron_agent_tests::machine_lock();
    let world = World::new();
    let u = TestUser::ensure("iatest5");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = dir.path().to_str().unwrap();
    let ca = Command::new(agent_bin())
        .args(["generate-ca", "--outdir", d])
        .output()
        .unwrap();
    assert!(ca.status.success());
    let config = AgentConfig {
        dns: Dns {
            proxy_ip: Some("127.0.0.1".into()),
            ..Dns::default()
        },
        proxy: Proxy::default(),
        tls: Tls::mitm(&dir.path().join("ca.crt"), &dir.path().join("ca.key")),
        metrics: None,
        transforms: vec![Transform::allowlist(&["a.test"])],
        mcp: None,
        mcp_gateway: None,
        intercept: None,
        log: None,
        postgres: None,
    };
    let cfg = dir.path().join("jail.yaml");
    std::fs::write(&cfg, config.to_yaml()).unwrap();
    let plain = "10.231.0.2:8080".parse().unwrap();

    // Control: without a jail the user reaches the plain service.
    assert_eq!(py(&u, &py_connect(plain)), "ok");

    let started = dir.path().join("started");
    let mut jail = Command::new(agent_bin())
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--user",
            "iatest5",
        ])
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("touch {} && exec sleep 60", started.display()))
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !started.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60) && jail.try_wait().unwrap().is_none(),
            "the jailed command did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A process of the same user started outside the jail's cgroup (as cron would) is governed.
    let outside = py(&u, &py_connect(plain));
    // Stop the jail (it forwards SIGTERM to CMD, then detaches everything).
    let killed = Command::new("kill")
        .args(["-TERM", &jail.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let t = Instant::now();
    while jail.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = jail.kill();
            panic!("iron-agent run did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = jail.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(outside, "EPERM", "{stderr}");
    // After the jail, the user is free again: nothing stays attached.
    assert_eq!(py(&u, &py_connect(plain)), "ok", "{stderr}");
    drop(world.ns);
}
