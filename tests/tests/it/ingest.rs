//! Audit from a managed agent to the real `iron-control`: the sync answer's `ingest_token`
//! turns on the agent's OTEL export to the control plane's `/v1/logs`; the proxy's tags are in
//! every audit line the agent writes and on the events `GET /api/v1/audit?tags=...` returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use iron_agent_tests::client::get;
use iron_agent_tests::control::Control;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, http_request};
use serde_json::{Value, json};

const TAGS: [&str; 2] = ["env:prod", "team:edge"];

/// Events the control plane returns for `query`, once at least `n` are there (bounded wait).
async fn audit_events(control: &Control, query: &str, n: usize, agent: &Agent) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = control
            .call("GET", &format!("/api/v1/audit{query}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        let events = v["data"].as_array().cloned().unwrap_or_default();
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{n} events for {query} not seen (got {events:?}); agent logs:\n{}\ncontrol logs:\n{}",
            agent.logs(),
            control.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn managed_agent_exports_tagged_audit_to_the_control_plane() {
    iron_agent_tests::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::start(dir.path());
        control.allow(&["localhost"]).await;
        let (status, proxy) = control
            .call(
                "POST",
                "/api/v1/proxies",
                Some(json!({"data": {"name": "edge", "tags": TAGS}})),
            )
            .await;
        assert_eq!(status, 201, "{proxy}");
        let proxy_id = proxy["data"]["id"].as_str().unwrap().to_owned();
        let token = proxy["data"]["token"].as_str().unwrap().to_owned();

        let ca = TestCa::new("ingest CA");
        let (c, k) = ca.write(dir.path());
        let mut cfg = serde_json::to_value(AgentConfig::loopback(&c, &k)).unwrap();
        cfg["control_plane"] = json!({"url": control.url(), "poll_interval": "1s"});
        let origin = Origin::start(OriginKind::Http, None).await;
        let agent = Agent::with_config(&serde_saphyr::to_string(&cfg).unwrap())
            .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
            .args(&["run", "--config", "{config}", "--token", &token])
            .start();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_request(agent.addr("metrics"), get("metrics", "/readyz"))
            .await
            .status
            != 200
        {
            assert!(Instant::now() < deadline, "not ready:\n{}", agent.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let host = format!("localhost:{}", origin.port());
        let allowed = http_request(agent.addr("http"), get(&host, "/x")).await;
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        let denied = http_request(agent.addr("http"), get("denied.example", "/y")).await;
        assert_eq!(denied.status, 403, "{}", denied.text());

        // The agent's own audit lines carry the tags.
        let lines = agent.audits_where(2, |v| {
            v["host"] == host.as_str() || v["host"] == "denied.example"
        });
        for l in &lines {
            assert_eq!(l["tags"], json!(TAGS), "{l}");
        }

        // The control plane has both, attributed to the proxy, found by tag.
        let events = audit_events(&control, "?tags=env:prod", 2, &agent).await;
        let find = |h: &str| {
            events
                .iter()
                .find(|e| e["host"] == h)
                .unwrap_or_else(|| panic!("no event for {h}: {events:?}"))
                .clone()
        };
        let ok = find(&host);
        assert_eq!(ok["action"], "allow");
        assert_eq!(ok["status_code"], 200);
        assert_eq!(ok["path"], "/x");
        assert_eq!(ok["proxy_id"], proxy_id.as_str());
        assert_eq!(ok["tags"], json!(TAGS));
        assert_eq!(ok["attributes"]["tags"], json!(TAGS));
        let no = find("denied.example");
        assert_eq!(no["action"], "reject");
        assert_eq!(no["status_code"], 403);
        let rejected = audit_events(
            &control,
            "?tags=env:prod,team:edge&action=reject&host=denied.example",
            1,
            &agent,
        )
        .await;
        assert_eq!(rejected.len(), 1);
        let (_, none) = control
            .call("GET", "/api/v1/audit?tags=env:dev", None)
            .await;
        assert_eq!(none["data"], json!([]));

        // Neither token appears in the agent's logs.
        let logs = agent.logs();
        assert!(!logs.contains(&token), "proxy token logged");
        assert!(!logs.contains("iing_"), "ingest token logged");
        assert!(
            logs.contains("audit export to the control plane enabled"),
            "{logs}"
        );
    });
}
