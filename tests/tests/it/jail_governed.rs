//! Issue 11 item 9: while `iron-agent run --user U -- CMD` runs, U stays governed outside the
//! jail's cgroup too. A second process of U started by root outside the jail (standing in for
//! cron, at or `ssh localhost`) is denied, not free; after the jail ends U is free again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iron_agent_tests::agent::{agent_command, generate_ca, wait_finished};
use iron_agent_tests::ebpf_world::{World, py};
use iron_agent_tests::netns::{TestUser, py_connect};
use iron_agent_tests::{AgentConfig, Transform};

#[test]
fn jailed_user_stays_governed_outside_the_jail_cgroup() {
    // The namespace holds the plain service the user connects to.
    let Some(_world) = World::enter("attaches eBPF programs, test users, a network namespace")
    else {
        return;
    };
    let u = TestUser::ensure("iatest5");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (c, k) = generate_ca(dir.path());
    let cfg = AgentConfig::jail(&c, &k)
        .transforms([Transform::allowlist(&["a.test"])])
        .write(&dir.path().join("jail.yaml"));
    let plain = "10.231.0.2:8080".parse().unwrap();

    // Control: without a jail the user reaches the plain service.
    assert_eq!(py(&u, &py_connect(plain)), "ok");

    let started = dir.path().join("started");
    let mut jail = agent_command(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--user",
        "iatest5",
    ])
    .args(["--", "/bin/sh", "-c"])
    .arg(format!("touch {} && exec sleep 60", started.display()))
    .stdout(Stdio::null())
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
    let stderr = wait_finished(jail, Duration::from_secs(60), "iron-agent run").stderr;
    assert_eq!(outside, "EPERM", "{stderr}");
    // After the jail, the user is free again: nothing stays attached.
    assert_eq!(py(&u, &py_connect(plain)), "ok", "{stderr}");
}
