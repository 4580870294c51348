//! eBPF mode, as root: a governed user's `psql -h db.test` (a database in a test network
//! namespace, named by a fake DNS zone) is redirected in the kernel to the PostgreSQL proxy,
//! logs in with the proxy credential and runs as the pinned role; other ports of that host stay
//! denied. Nothing leaves the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::dns::fake_zone;
use iron_agent_tests::ebpf_world::{PIN_DIR, Unpin, py};
use iron_agent_tests::netns::{NetNs, TestUser, py_connect, skip_unless_root};
use iron_agent_tests::postgres::{
    Cluster, ClusterOptions, PROXY_PASSWORD, PROXY_USER, UPSTREAM_PASSWORD, agent_config, bin,
    proxy_block,
};
use iron_agent_tests::{Agent, Transform};
use serde_json::json;

#[test]
fn governed_psql_to_the_database_host_is_redirected_to_the_proxy() {
    if skip_unless_root("eBPF programs, a network namespace and a test user") {
        return;
    }
    let _g = iron_agent_tests::machine_lock();
    let _unpin = Unpin;
    let ns = NetNs::new("iapg", "10.232.0.1", &["10.232.0.2"], "fd32::1", "fd32::2");
    let cluster = Cluster::start_with(ClusterOptions {
        listen: "10.232.0.2".parse().unwrap(),
        netns: Some(ns.name.clone()),
    });
    let rt = iron_agent_tests::runtime();
    let zone = rt.block_on(fake_zone(&[("db.test", "10.232.0.2")]));
    let user = TestUser::ensure("iatest1");
    let block = proxy_block("127.0.0.1:0", &[("appdb", Some("tenant_role"), &[])]);
    let cfg = agent_config(block).with(|c| {
        c.dns.enabled = None;
        c.dns.listen = Some("127.0.0.1:0".into());
        c.dns.upstream_resolver = Some(zone.to_string());
        c.transforms = vec![Transform::allowlist(&["nothing.test"])];
        c.intercept = Some(json!({
            "mode": "ebpf",
            "default": "exempt",
            "governed": {"users": ["iatest1"]},
            "pin_dir": PIN_DIR,
        }));
    });
    let agent = Agent::with(&cfg)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env(
            "PG_DSN_APPDB",
            cluster.dsn(Some("db.test"), "appdb", "require"),
        )
        .start();
    assert!(
        agent.logs().contains("eBPF interception attached"),
        "{}",
        agent.logs()
    );

    let psql = bin("psql").to_string_lossy().into_owned();
    let out = user.run_env(
        &[("PGPASSWORD", PROXY_PASSWORD), ("PGCONNECT_TIMEOUT", "10")],
        &[
            &psql,
            "-X",
            "-A",
            "-t",
            "-h",
            "db.test",
            "-p",
            "5432",
            "-U",
            PROXY_USER,
            "-d",
            "appdb",
            "-c",
            "SELECT current_user, inet_server_addr()",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\n{}", agent.logs());
    // The pinned role, on the real server in the namespace.
    assert!(text.contains("tenant_role|10.232.0.2"), "{text}");

    let rec = agent.audit_where(|v| v["postgres"]["event"] == "session" && v["action"] == "allow");
    assert_eq!(rec["uid"], user.uid);
    assert_eq!(rec["user"], "iatest1");
    assert_eq!(rec["orig_dst"], "10.232.0.2:5432");
    assert_eq!(rec["comm"], "psql");
    assert_eq!(rec["postgres"]["upstream"], "db.test:5432");
    assert_eq!(rec["postgres"]["upstream_tls"], true);

    // Only configured database destinations are redirected: another port is denied.
    let other = py(&user, &py_connect("10.232.0.2:5433".parse().unwrap()));
    assert_eq!(other, "EPERM", "{other}");
    agent.assert_not_logged(UPSTREAM_PASSWORD);
    drop(agent);
    drop(cluster);
    drop(ns);
}
