//! Synced PostgreSQL upstreams (iron-proxy §21.5) against the real `iron-control` and a real
//! PostgreSQL cluster: a PG DSN secret granted on the control plane becomes an upstream of the
//! agent's PostgreSQL proxy, whose listener and client credential come from
//! `IRON_PROXY_PG_*` (no local `postgres:` block); psql logs in through it as the pinned role;
//! revoking the grant takes the listener away at the next sync; the DSN's password is never
//! logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iron_agent_tests::control::Control;
use iron_agent_tests::postgres::{
    Cluster, PROXY_PASSWORD, PROXY_USER, UPSTREAM_PASSWORD, free_port, psql, wait_port,
};
use iron_agent_tests::{Agent, AgentConfig, TestCa};
use serde_json::json;

/// Waits (bounded) until nothing accepts on `addr` any more.
fn wait_closed(addr: SocketAddr, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still open; logs:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_granted_pg_dsn_secret_becomes_an_upstream_and_its_revocation_closes_the_listener() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path());
    let (principal, grant, token) = iron_agent_tests::runtime().block_on(async {
        let principal = control.principal("db-host").await;
        let (status, secret) = control
            .call(
                "POST",
                "/api/v1/pg_dsn_secrets",
                Some(json!({"data": {
                    "foreign_id": "app-pg", "database": "appdb", "role": "tenant_role",
                    "dsn": {"source_type": "control_plane",
                            "secret": cluster.dsn(None, "appdb", "disable"), "config": {}}
                }})),
            )
            .await;
        assert_eq!(status, 201, "{secret}");
        let (status, grant) = control
            .call(
                "POST",
                "/api/v1/grants",
                Some(json!({"data": {"principal_id": principal,
                                     "pg_dsn_secret_id": secret["data"]["id"]}})),
            )
            .await;
        assert_eq!(status, 201, "{grant}");
        let (_, token) = control.proxy(&principal).await;
        (
            principal,
            grant["data"]["id"].as_str().unwrap().to_string(),
            token,
        )
    });

    let ca = TestCa::new("managed pg CA");
    let (c, k) = ca.write(dir.path());
    let mut v = serde_json::to_value(AgentConfig::loopback(&c, &k)).unwrap();
    v["control_plane"] = json!({"url": control.url(), "poll_interval": "1s"});
    let pg_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = Agent::with_config(&serde_saphyr::to_string(&v).unwrap())
        .env("IRON_PROXY_TOKEN", &token)
        .env("IRON_PROXY_PG_LISTEN", pg_addr.to_string())
        .env("IRON_PROXY_PG_CLIENT_USER", PROXY_USER)
        .env("IRON_PROXY_PG_CLIENT_PASSWORD", PROXY_PASSWORD)
        .start();
    wait_port(pg_addr);

    let conninfo = format!(
        "host={} port={} dbname=appdb user={PROXY_USER} sslmode=disable",
        pg_addr.ip(),
        pg_addr.port()
    );
    let (code, out) = psql(&conninfo, PROXY_PASSWORD, "SELECT current_user;\n");
    assert_eq!(code, 0, "{out}; logs:\n{}", agent.logs());
    assert_eq!(out.trim(), "tenant_role", "{out}");
    // A database the control plane did not grant.
    let other = conninfo.replace("dbname=appdb", "dbname=otherdb");
    let (code, out) = psql(&other, PROXY_PASSWORD, "SELECT 1;\n");
    assert_ne!(code, 0);
    assert!(
        out.contains("no upstream for database \"otherdb\""),
        "{out}"
    );
    assert!(agent.wait_for_log("\"protocol\":\"postgres\""));

    // Revoke: the next sync carries no upstream, so the listener goes away.
    iron_agent_tests::runtime().block_on(async {
        let (status, body) = control
            .call("DELETE", &format!("/api/v1/grants/{grant}"), None)
            .await;
        assert!(status == 200 || status == 204, "{status} {body}");
    });
    wait_closed(pg_addr, &agent);

    agent.assert_not_logged(UPSTREAM_PASSWORD);
    agent.assert_not_logged(&token);
    let _ = principal;
}
