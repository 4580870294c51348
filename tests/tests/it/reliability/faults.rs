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
/// 200 and one audit record, and the agent exits 0.
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
        let status = tokio::task::block_in_place(|| agent.signal(libc::SIGTERM));
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
        assert!(
            slow.iter()
                .all(|a| a["status_code"] == 200 && a["action"] == "allow")
        );
    });
}
