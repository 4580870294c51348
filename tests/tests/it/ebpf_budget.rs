//! Issue 11 item 14, per-identity budgets, through the running agent with governed test users:
//! past `requests_per_minute`, `new_hosts_per_hour` or `bytes_out_per_hour` of the user's
//! policy the agent answers 429 with a body naming the budget, audits `reason:
//! budget_exceeded`, and counts it in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::TestCa;
use iron_agent_tests::ebpf_world::{World, curl, intercept};
use iron_agent_tests::netns::TestUser;
use serde_json::json;

#[test]
fn budgets_of_a_policy_are_enforced_with_429_audit_and_metrics() {
    let Some(world) = World::enter("eBPF programs, test users, a network namespace") else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("budget MITM CA");
    let mut cfg = world.config(&mitm);
    let allow = json!([{"name": "allowlist", "config": {"domains": ["api.test", "other.test"]}}]);
    cfg.intercept = Some(intercept(json!({
        "policies": [
            {"name": "rate", "users": ["iatest1"], "transforms": allow,
             "budget": {"requests_per_minute": 2}},
            {"name": "volume", "users": ["iatest2"], "transforms": allow,
             "budget": {"new_hosts_per_hour": 1, "bytes_out_per_hour": 10}},
        ],
    })));
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();

    // requests_per_minute: 2. The third request in the minute gets 429 and one audit record.
    for p in ["/r1", "/r2"] {
        let (_, code, out) = curl(&u1, &ca, &[], &format!("https://api.test{p}"));
        assert_eq!(code, "200", "{out}");
    }
    let (_, code, out) = curl(&u1, &ca, &[], "https://api.test/r3");
    assert_eq!(code, "429", "{out}");
    assert!(
        out.contains("budget exceeded: requests_per_minute"),
        "{out}"
    );
    let a = agent.audit_where(|a| a["path"] == "/r3");
    assert_eq!(a["reason"], "budget_exceeded");
    assert_eq!(a["action"], "reject");
    assert_eq!(a["policy"], "rate");
    assert_eq!(a["status_code"], 429);

    // new_hosts_per_hour: 1. A second host is refused; the first stays reachable.
    let (_, code, out) = curl(&u2, &ca, &[], "https://api.test/h1");
    assert_eq!(code, "200", "{out}");
    let (_, code, out) = curl(&u2, &ca, &[], "https://other.test/h2");
    assert_eq!(code, "429", "{out}");
    assert!(out.contains("new_hosts_per_hour"), "{out}");
    assert_eq!(
        agent.audit_where(|a| a["path"] == "/h2")["reason"],
        "budget_exceeded"
    );
    // bytes_out_per_hour: 10. A 100-byte upload uses it up; the next request is refused.
    let body = "x".repeat(100);
    let (_, code, out) = curl(
        &u2,
        &ca,
        &["-X", "POST", "--data", &body],
        "https://api.test/b1",
    );
    assert_eq!(code, "200", "{out}");
    let (_, code, out) = curl(&u2, &ca, &[], "https://api.test/b2");
    assert_eq!(code, "429", "{out}");
    assert!(out.contains("bytes_out_per_hour"), "{out}");
    assert_eq!(
        agent.audit_where(|a| a["path"] == "/b2")["reason"],
        "budget_exceeded"
    );

    // The counters are on /metrics.
    let metrics = super::metrics::scrape_metrics_blocking(agent.addr("metrics")).text;
    for line in [
        r#"iron_agent_budget_exceeded_total{policy="rate",budget="requests_per_minute"} 1"#,
        r#"iron_agent_budget_exceeded_total{policy="volume",budget="new_hosts_per_hour"} 1"#,
        r#"iron_agent_budget_exceeded_total{policy="volume",budget="bytes_out_per_hour"} 1"#,
        r#"iron_agent_budget_used_total{policy="rate",budget="requests_per_minute"} 2"#,
        r#"iron_agent_budget_used_total{policy="volume",budget="bytes_out_per_hour"} 100"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    drop(agent);
}
