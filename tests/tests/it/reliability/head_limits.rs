//! Request head limits on the HTTP and MITM HTTPS listeners: a head with too many header
//! fields or too many bytes gets a 431 and exactly one audit record (`reason:
//! request_header_fields_too_large`, `rejected_by: proxy`); a head under the limits is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{src}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends `head` and reads what comes back until the agent closes (heads carry
/// `Connection: close`). A reset after the answer
/// (the agent closed with part of an oversized head unread) ends the read like EOF.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, head: &str) -> String {
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answer in time");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn head_with(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
}

fn many_headers(n: usize) -> String {
    (0..n).map(|i| format!("x-h{i}: v\r\n")).collect()
}

fn big_header(bytes: usize) -> String {
    format!("x-big: {}\r\n", "a".repeat(bytes))
}

async fn tls(
    cfg: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tokio_rustls::TlsConnector::from(cfg)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[test]
fn heads_over_the_limits_get_431_and_one_audit_record() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("head-limits");
        let (c, k) = ca.write(dir.path());
        let origin = Origin::start(OriginKind::Http, None).await;
        let cfg = AgentConfig::loopback(&c, &k).transforms([Transform::new(
            "allowlist",
            json!({"cidrs": ["127.0.0.1/32"]}),
        )]);
        let agent = Agent::with(&cfg).start();
        let http = agent.addr("http");
        let https = agent.addr("https");
        let host = format!("127.0.0.1:{}", origin.port());

        // Under the limits (50 headers, 8 KiB header): served, so the limits are not too tight.
        let ok = exchange(
            connect_from("127.0.0.1", http).await,
            &head_with(&host, "/fine", &(many_headers(50) + &big_header(8 * 1024))),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

        // Over the limits, each from its own client address so its record can be told apart.
        let cases = [
            ("127.0.0.2", false, many_headers(200)),
            ("127.0.0.3", false, big_header(100 * 1024)),
            ("127.0.0.4", true, many_headers(200)),
            ("127.0.0.5", true, big_header(100 * 1024)),
        ];
        for (src, over_tls, extra) in &cases {
            let head = head_with(&host, "/too-large", extra);
            let answer = if *over_tls {
                let tcp = connect_from(src, https).await;
                exchange(tls(ca.client_config(), tcp).await, &head).await
            } else {
                exchange(connect_from(src, http).await, &head).await
            };
            assert!(
                answer.starts_with("HTTP/1.1 431"),
                "{src}: {answer}; logs:\n{}",
                agent.logs()
            );
        }
        for (src, over_tls, _) in &cases {
            let from = |a: &serde_json::Value| {
                a["remote_addr"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(&format!("{src}:")))
            };
            let rec = agent.audit_where(from);
            assert_eq!(rec["status_code"], 431, "{rec}");
            assert_eq!(rec["action"], "reject", "{rec}");
            assert_eq!(rec["reason"], "request_header_fields_too_large", "{rec}");
            assert_eq!(rec["rejected_by"], "proxy", "{rec}");
            let sni = if *over_tls { "localhost" } else { "" };
            assert_eq!(rec["sni"], sni, "{rec}");
            // Nothing of the refused head is trusted: the TLS name is the only host known.
            assert_eq!(rec["host"], sni, "{rec}");
            assert_eq!(rec["method"], "", "{rec}");
        }
        // Exactly one record each, and none for anything else: give late writes a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let audits = agent.audits();
        for (src, _, _) in &cases {
            let n = audits
                .iter()
                .filter(|a| {
                    a["remote_addr"]
                        .as_str()
                        .is_some_and(|r| r.starts_with(&format!("{src}:")))
                })
                .count();
            assert_eq!(n, 1, "{src}: {audits:?}");
        }
        assert_eq!(audits.len(), 5, "{audits:?}");
    });
}
