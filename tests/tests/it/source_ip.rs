//! Two small keys from iron-proxy's recent releases, end to end: `rules[].source_ip` (the
//! client address a rule is limited to) and `secrets[].replace.allow_connect_without_header`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::client::get_with;
use iron_agent_tests::mitm::{MitmAgent, localhost_origin};
use iron_agent_tests::{AgentConfig, Origin, OriginKind, TestCa, Transform, connect_tunnel};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CONNECT reply's status line for `target`.
async fn connect_status(m: &MitmAgent, target: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(m.agent.addr("tunnel"))
        .await
        .unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn source_ip_limits_rules_to_the_client_address() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let (origin, origin_ca) = localhost_origin().await;
        let plain = Origin::start(OriginKind::Http, None).await;
        // The tests' client is 127.0.0.1: the first rule is ours, the second someone else's.
        let allow = Transform::new(
            "allowlist",
            json!({"rules": [
                {"host": "localhost", "source_ip": "127.0.0.1", "paths": ["/mine/*"]},
                {"host": "localhost", "source_ip": "10.9.0.0/16"},
                {"cidr": "127.0.0.0/8", "source_ip": "10.9.0.7"},
            ]}),
        );
        let m = MitmAgent::prepare(&[]).trust(&origin_ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .tunnel_listener()
                .transforms([allow])
        });
        let host = format!("localhost:{}", origin.port());
        assert_eq!(m.send(get_with(&host, "/mine/x", &[])).await.status, 200);
        // Only the other client's rule admits this path: refused.
        assert_eq!(m.send(get_with(&host, "/theirs", &[])).await.status, 403);
        let rec = m.agent.audit_where(|a| a["path"] == "/theirs");
        assert_eq!(rec["rejected_by"], "allowlist");
        // Tunnel setup: `localhost` is admitted by our rule, the bare address only by 10.9.0.7's.
        connect_tunnel(
            m.agent.addr("tunnel"),
            &format!("localhost:{}", plain.port()),
        )
        .await;
        let st = connect_status(&m, &format!("127.0.0.1:{}", plain.port())).await;
        assert!(st.starts_with("HTTP/1.1 403"), "{st}");
        assert_eq!(plain.hits(), 0);
    });
}

#[test]
fn source_ip_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("c").write(dir.path());
    let cfg = AgentConfig::loopback(&c, &k).transforms([Transform::new(
        "allowlist",
        json!({"rules": [{"host": "a.test", "source_ip": "10.0.0"}]}),
    )]);
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, cfg.to_yaml()).unwrap();
    let out = Command::new(agent_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("transforms[0].config.rules[0].source_ip") && err.contains("\"10.0.0\""),
        "{err}"
    );
}

#[test]
fn allow_connect_without_header_keeps_require_for_other_requests() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let (origin, origin_ca) = localhost_origin().await;
        let transforms = vec![
            Transform::allowlist(&["localhost"]),
            Transform::secrets(json!([{
                "source": {"type": "env", "var": "API_KEY"},
                "replace": {
                    "proxy_value": "proxy-key-1",
                    "match_headers": ["X-Api-Key"],
                    "require": true,
                    "allow_connect_without_header": true,
                },
                "rules": [{"host": "localhost"}],
            }])),
        ];
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .env("API_KEY", "real-key-778899")
            .start(|c, k| {
                AgentConfig::loopback(c, k)
                    .tunnel_listener()
                    .transforms(transforms)
            });
        let host = format!("localhost:{}", origin.port());
        // A CONNECT without the header opens the tunnel.
        connect_tunnel(m.agent.addr("tunnel"), &host).await;
        // Ordinary requests still need the placeholder.
        assert_eq!(m.send(get_with(&host, "/bare", &[])).await.status, 403);
        let r = m
            .send(get_with(&host, "/keyed", &[("x-api-key", "proxy-key-1")]))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.echoed_header("x-api-key").as_deref(),
            Some("real-key-778899")
        );
        m.assert_not_in_logs(&["real-key-778899"]);
    });
}
