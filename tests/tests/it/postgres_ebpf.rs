//! eBPF mode, as root: a governed user's `psql -h db.test` (a database in a test network
//! namespace, named by a fake DNS zone) is redirected in the kernel to the PostgreSQL proxy,
//! logs in with the proxy credential and runs as the pinned role; other ports of that host stay
//! denied. A direct connection to the proxy listener is judged by the kernel's record: a
//! `deny` identity and a peer without a record are refused at login, never served with the
//! agent-held credentials. Nothing leaves the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::dns::fake_zone;
use iron_agent_tests::ebpf_world::{Unpin, intercept, py};
use iron_agent_tests::netns::{NetNs, TestUser, py_connect, root_turn};
use iron_agent_tests::postgres::{
    Cluster, ClusterOptions, PROXY_PASSWORD, PROXY_USER, UPSTREAM_PASSWORD, agent_config, bin,
    proxy_block,
};
use iron_agent_tests::{Agent, Transform};
use serde_json::json;

#[test]
fn governed_psql_to_the_database_host_is_redirected_to_the_proxy() {
    let Some(_turn) = root_turn("eBPF programs, a network namespace and a test user") else {
        return;
    };
    let _unpin = Unpin::fresh();
    let ns = NetNs::new("iapg", "10.232.0.1", &["10.232.0.2"], "fd32::1", "fd32::2");
    let cluster = Cluster::start_with(ClusterOptions {
        listen: "10.232.0.2".parse().unwrap(),
        netns: Some(ns.name.clone()),
    });
    let rt = iron_agent_tests::runtime();
    let zone = rt.block_on(fake_zone(&[("db.test", "10.232.0.2")]));
    let user = TestUser::ensure("iatest1");
    let denied = TestUser::ensure("iatest3");
    // Every address: reachable on the namespace link too, where no peer is recorded.
    let block = proxy_block("0.0.0.0:0", &[("appdb", Some("tenant_role"), &[])]);
    let cfg = agent_config(block).with(|c| {
        c.dns.enabled = None;
        c.dns.listen = Some("127.0.0.1:0".into());
        c.dns.upstream_resolver = Some(zone.to_string());
        c.transforms = vec![Transform::allowlist(&["nothing.test"])];
        c.intercept = Some(intercept(json!({
            "governed": {"users": ["iatest1"]},
            "deny": {"users": ["iatest3"]},
        })));
    });
    let agent = Agent::with(&cfg)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env(
            "PG_DSN_APPDB",
            cluster.dsn(Some("db.test"), "appdb", "require"),
        )
        .start_attached();

    let psql = bin("psql").to_string_lossy().into_owned();
    let args = |host: &str, port: &str| -> Vec<String> {
        [
            &psql,
            "-X",
            "-A",
            "-t",
            "-h",
            host,
            "-p",
            port,
            "-U",
            PROXY_USER,
            "-d",
            "appdb",
            "-c",
            "SELECT current_user, inet_server_addr()",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let env = [("PGPASSWORD", PROXY_PASSWORD), ("PGCONNECT_TIMEOUT", "10")];
    let run_as = |u: &TestUser, host: &str, port: &str| {
        let a = args(host, port);
        let out = u.run_env(&env, &a.iter().map(String::as_str).collect::<Vec<_>>());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run_as(&user, "db.test", "5432");
    assert!(ok, "{text}\n{}", agent.logs());
    // The pinned role, on the real server in the namespace.
    assert!(text.contains("tenant_role|10.232.0.2"), "{text}");

    let rec = agent.audit_where(|v| v["postgres"]["event"] == "session" && v["action"] == "allow");
    assert_eq!(rec["uid"], user.uid);
    assert_eq!(rec["user"], "iatest1");
    assert_eq!(rec["orig_dst"], "10.232.0.2:5432");
    assert_eq!(rec["comm"], "psql");
    assert_eq!(rec["postgres"]["upstream"], "db.test:5432");
    assert_eq!(rec["postgres"]["upstream_tls"], true);

    // Direct to the proxy listener: a governed user is recorded and served (its port entered
    // the kernel's agent-port table once the proxy was bound)...
    let port = agent.addr("postgres").port().to_string();
    let (ok, text) = run_as(&user, "127.0.0.1", &port);
    assert!(ok, "{text}\n{}", agent.logs());
    assert!(text.contains("tenant_role|10.232.0.2"), "{text}");
    // ...a `deny` identity is refused at login and audited...
    let (ok, text) = run_as(&denied, "127.0.0.1", &port);
    assert!(!ok, "{text}");
    assert!(text.contains("denied network access"), "{text}");
    let rec = agent.audit_where(|v| v["reason"] == "identity_denied");
    assert_eq!(rec["protocol"], "postgres");
    assert_eq!(rec["uid"], denied.uid);
    assert_eq!(rec["postgres"]["sqlstate"], "28000");
    // ...and so is a peer the kernel recorded nothing for (root, exempt, dialling the host's
    // namespace-link address: only loopback connects to agent ports are recorded).
    let a = args("10.232.0.1", &port);
    let out = std::process::Command::new(&a[0])
        .args(&a[1..])
        .env("PGPASSWORD", PROXY_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("recorded no identity"), "{text}");
    let rec = agent.audit_where(|v| v["reason"] == "unidentified_peer");
    assert_eq!(rec["protocol"], "postgres");
    assert_eq!(rec["action"], "reject");

    // Only configured database destinations are redirected: another port is denied.
    let other = py(&user, &py_connect("10.232.0.2:5433".parse().unwrap()));
    assert_eq!(other, "EPERM", "{other}");
    agent.assert_not_logged(UPSTREAM_PASSWORD);
    drop(agent);
    drop(cluster);
    drop(ns);
}
