//! Faults injected through the running agent (issue 21 item 3). Covered elsewhere: upstream
//! never answering (`policy::upstream_header_timeout_is_502`), silent clients
//! (`proxy::first_byte` unit test), open tunnels at shutdown
//! (`tunnel::shutdown_closes_open_tunnels_promptly`), slow audit receivers
//! (`otel::slow_receiver_loses_nothing`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request};
use serde_json::json;

/// SIGTERM while requests wait on a slow upstream: every in-flight request completes with its
/// 200 and one audit record, a new connection meanwhile is not served, and the agent exits 0.
#[test]
fn sigterm_under_load_drains_in_flight_requests() {
    const IN_FLIGHT: usize = 6;
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("faults");
        let (c, k) = ca.write(dir.path());
        let origin = Origin::start(OriginKind::Http, None).await;
        let cfg = AgentConfig::loopback(&c, &k)
            .transforms([Transform::new(
                "allowlist",
                json!({"cidrs": ["127.0.0.1/32"]}),
            )])
            .with(|c| c.proxy.upstream_response_header_timeout = Some("10s".into()));
        let mut agent = Agent::with(&cfg).start();
        let http = agent.addr("http");
        let host = format!("127.0.0.1:{}", origin.port());
        let mut tasks = Vec::new();
        for i in 0..IN_FLIGHT {
            let req = iron_agent_tests::client::get(&host, &format!("/slow?i={i}"));
            tasks.push(tokio::spawn(http_request(http, req)));
        }
        // `/slow` answers after 3 s: all requests are in flight when the signal comes.
        tokio::time::sleep(Duration::from_millis(800)).await;
        // SAFETY: plain kill(2) on our own child's pid; `Agent::signal` would block until exit.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(agent.pid() as i32, libc::SIGTERM);
        }
        assert!(agent.wait_for_log("shutting down"), "{}", agent.logs());
        assert!(
            tasks.iter().all(|t| !t.is_finished()),
            "the slow requests must still be in flight"
        );
        let late = tokio::time::timeout(Duration::from_secs(15), late_request(http, &host))
            .await
            .expect("a connection during the drain is closed once the agent exits");
        assert!(
            !late.starts_with("HTTP/1.1 200"),
            "answered during the drain: {late}"
        );
        let status = tokio::task::block_in_place(|| agent.wait_exit(Duration::from_secs(15)));
        for t in tasks {
            let reply = tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply.status, 200, "{}", agent.logs());
        }
        assert_eq!(status.code(), Some(0), "{}", agent.logs());
        let recs = agent.audits();
        let slow: Vec<_> = recs.iter().filter(|a| a["path"] == "/slow").collect();
        assert_eq!(slow.len(), IN_FLIGHT, "{recs:?}");
        assert!(recs.iter().all(|a| a["path"] != "/late"), "{recs:?}");
        assert!(
            slow.iter()
                .all(|a| a["status_code"] == 200 && a["action"] == "allow")
        );
    });
}

/// A GET on a fresh connection; returns whatever came back ("" when the connect was refused
/// or the connection closed unanswered).
async fn late_request(http: std::net::SocketAddr, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return String::new();
    };
    let req = format!("GET /late HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// DNS upstream down (a resolver address that never answers): a passthrough name gets
/// SERVFAIL in bounded time, and names the agent answers itself are unaffected.
#[test]
fn dns_upstream_down_is_servfail_without_hang() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use iron_agent_tests::config::Dns;
    use iron_agent_tests::dns::{a_answers, rcode, udp};
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        // Bound and silent: queries to it are swallowed, never answered.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("dns-down").write(dir.path());
        let cfg = AgentConfig {
            dns: Dns {
                listen: Some("127.0.0.1:0".into()),
                proxy_ip: Some("10.9.8.7".into()),
                upstream_resolver: Some(silent.local_addr().unwrap().to_string()),
                passthrough: vec!["*.passthrough.test".into()],
                ..Dns::default()
            },
            ..AgentConfig::loopback(&c, &k)
        }
        .transforms([Transform::allowlist(&["*.test"])]);
        let agent = Agent::with(&cfg).start();
        let dns = agent.addr("dns");
        let start = std::time::Instant::now();
        let m = tokio::time::timeout(
            Duration::from_secs(20),
            udp(dns, "svc.passthrough.test.", RecordType::A),
        )
        .await
        .expect("an answer, not a hang");
        assert_eq!(rcode(&m), ResponseCode::ServFail, "{m:?}");
        assert!(start.elapsed() < Duration::from_secs(20));
        // The agent's own answers do not wait on the dead upstream.
        let m = udp(dns, "api.example.com.", RecordType::A).await;
        assert_eq!(
            a_answers(&m),
            vec!["10.9.8.7".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        drop(silent);
    });
}
