//! The judge's resource limits: `max_concurrent` (calls beyond it wait for a slot) and the
//! request body limit (a body over `proxy.max_request_body_bytes` is a 413, never judged).

use std::time::Duration;

use iron_agent_tests::mitm::{MitmAgent, Setup, localhost_origin};
use iron_agent_tests::{AgentConfig, Transform};
use serde_json::json;

use super::llm::{self, FakeLlm, KEY};
use super::{judge, post};

/// How late the fake LLM answers: long enough that overlapping calls are unmistakable.
const DELAY: Duration = Duration::from_millis(800);

/// When the fake LLM received each call whose envelope URL starts with `prefix`, in order.
fn arrivals(fake: &FakeLlm, prefix: &str) -> Vec<std::time::Instant> {
    let mut at: Vec<_> = fake
        .calls()
        .iter()
        .filter(|c| {
            llm::envelope(c)["url"]
                .as_str()
                .unwrap()
                .starts_with(prefix)
        })
        .map(|c| c.at)
        .collect();
    at.sort();
    at
}

#[test]
fn max_concurrent_one_makes_the_second_call_wait_for_the_first() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::with_delay(DELAY).await;
        let scoped = |path: &str, max: u32| {
            json!({"max_concurrent": max, "timeout": "10s",
                   "rules": [{"host": "localhost", "methods": ["POST"], "paths": [path]}]})
        };
        let s = super::setup(vec![
            Transform::allowlist(&["localhost"]),
            judge("serial", "anthropic", &llm, scoped("/serial/*", 1)),
            judge("parallel", "anthropic", &llm, scoped("/parallel/*", 2)),
        ])
        .await;
        let host = s.host();

        let (a, b) = tokio::join!(
            s.send(post(&host, "/serial/a", "{}")),
            s.send(post(&host, "/serial/b", "{}")),
        );
        assert_eq!(
            (a.status, b.status),
            (200, 200),
            "{} {}",
            a.text(),
            b.text()
        );
        let at = arrivals(&llm, "/serial/");
        assert_eq!(at.len(), 2);
        let gap = at[1] - at[0];
        assert!(
            gap >= DELAY - Duration::from_millis(50),
            "with max_concurrent 1 the second call starts after the first answered: {gap:?}"
        );

        // The same pair against a judge with two slots overlaps: the wait above is the limit's.
        let (a, b) = tokio::join!(
            s.send(post(&host, "/parallel/a", "{}")),
            s.send(post(&host, "/parallel/b", "{}")),
        );
        assert_eq!((a.status, b.status), (200, 200));
        let at = arrivals(&llm, "/parallel/");
        assert_eq!(at.len(), 2);
        assert!(at[1] - at[0] < DELAY / 2, "{:?}", at[1] - at[0]);
    });
}

#[test]
fn a_judged_body_over_the_limit_is_413_and_never_sent_to_the_llm() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        let (origin, origin_ca) = localhost_origin().await;
        let transforms = vec![
            Transform::allowlist(&["localhost"]),
            judge("guard", "anthropic", &llm, json!({})),
        ];
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .env("JUDGE_KEY", KEY)
            .start(|c, k| {
                AgentConfig::loopback(c, k)
                    .transforms(transforms)
                    .with(|c| c.proxy.max_request_body_bytes = Some(64))
            });
        let s = Setup { m, origin };
        let host = s.host();
        let big = format!("{{\"body\":\"{}\"}}", "x".repeat(200));

        let r = s.send(post(&host, "/comments", &big)).await;
        assert_eq!(r.status, 413, "{}", r.text());
        assert_eq!(llm.count(), 0, "a truncated view is never judged");
        let rec = s.agent.audit_where(|a| a["path"] == "/comments");
        assert_eq!(rec["status_code"], 413, "{rec}");

        // Under the limit the same judge runs; a request it does not match streams any size.
        let r = s.send(post(&host, "/comments", "{}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(llm.count(), 1);
        let mut put = post(&host, "/upload", &big);
        *put.method_mut() = http::Method::PUT;
        let r = s.send(put).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["body"], big.as_str());
        assert_eq!(llm.count(), 1);
    });
}
