//! Resource limits through the running agent: connections past `proxy.max_connections_per_client`
//! or `proxy.max_connections` get a 503 and one audit record each; slots come back when
//! connections close (config errors: `config::tests::connection_limits`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{src}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// One keep-alive GET; returns the status line and the head.
async fn get(s: &mut TcpStream, host: &str, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Head and a body delimited by Content-Length: enough to read until the head is complete
    // and the declared body arrived.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len || n == 0 {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

#[test]
fn connections_past_the_limits_get_503_and_are_audited() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("limits");
        let (c, k) = ca.write(dir.path());
        let origin = Origin::start(OriginKind::Http, None).await;
        let cfg = AgentConfig::loopback(&c, &k)
            .tunnel_listener()
            .transforms([Transform::new(
                "allowlist",
                json!({"cidrs": ["127.0.0.1/32"]}),
            )])
            .with(|c| {
                c.proxy.max_connections = Some(3);
                c.proxy.max_connections_per_client = Some(2);
            });
        let agent = Agent::with(&cfg).start();
        let http = agent.addr("http");
        let host = format!("127.0.0.1:{}", origin.port());

        // Two from 127.0.0.1 are served and stay open.
        let mut a1 = connect_from("127.0.0.1", http).await;
        let mut a2 = connect_from("127.0.0.1", http).await;
        assert!(
            get(&mut a1, &host, "/one")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(
            get(&mut a2, &host, "/two")
                .await
                .starts_with("HTTP/1.1 200")
        );
        // A third from the same client: 503, then closed.
        let mut a3 = connect_from("127.0.0.1", http).await;
        let head = get(&mut a3, &host, "/three").await;
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let rec = agent.audit_where(|a| a["path"] == "/three");
        assert_eq!(rec["status_code"], 503);
        assert_eq!(rec["action"], "reject");
        assert_eq!(rec["reason"], "client_connection_limit");
        assert_eq!(rec["host"], host.as_str());

        // Another client still has room until the global limit (3) is reached.
        let mut b1 = connect_from("127.0.0.2", http).await;
        assert!(
            get(&mut b1, &host, "/four")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let mut c1 = connect_from("127.0.0.3", http).await;
        let head = get(&mut c1, &host, "/five").await;
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        let rec = agent.audit_where(|a| a["path"] == "/five");
        assert_eq!(rec["reason"], "connection_limit");
        // The tunnel listener counts too: a CONNECT past the limit is answered 503, audited.
        let mut t = connect_from("127.0.0.3", agent.addr("tunnel")).await;
        t.write_all(format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), t.read_to_string(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        agent.audits_where(1, |a| {
            a["reason"] == "connection_limit" && a["method"] == "CONNECT"
        });

        // Closing a connection gives its slot back.
        drop(a1);
        let mut again = None;
        for _ in 0..50 {
            let mut s = connect_from("127.0.0.1", http).await;
            let head = get(&mut s, &host, "/again").await;
            if head.starts_with("HTTP/1.1 200") {
                again = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.is_some(), "slot released; logs:\n{}", agent.logs());
        drop((a2, b1));
        // Every answered request left exactly one record (retries included).
        let answered = agent
            .audits()
            .iter()
            .filter(|a| a["tunnel"].is_null())
            .count();
        assert!(answered >= 6, "{answered}");
    });
}
