use std::sync::Arc;

use super::kernel::{KernelCounter, KernelFamily};
use super::*;

/// The value of the sample `line_start` (metric name and labels), if present.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
}

#[test]
fn families_are_declared_and_count() {
    let m = Metrics::new();
    m.request("allow", Some("ci"), "http/1.1", 12.0);
    m.transform("allowlist", "request", "allow");
    m.upstream_error("connect_refused");
    m.tls_leaf_cache(true);
    m.tls_leaf_minted();
    m.dns_query("A", "records");
    m.secret_refresh_failed("env");
    m.otel_dropped("queue_full", 2);
    m.record_reload(false, "sha256:bad");
    m.record_reload(true, "sha256:new");
    let text = m.encode();
    for family in [
        "iron_agent_requests",
        "iron_agent_request_duration_seconds",
        "iron_agent_transform_actions",
        "iron_agent_upstream_errors",
        "iron_agent_tls_leaf_cache",
        "iron_agent_tls_leaf_mints",
        "iron_agent_dns_queries",
        "iron_agent_secret_refresh_failures",
        "iron_agent_audit_dropped",
        "iron_agent_otel_exported",
        "iron_agent_otel_dropped",
        "iron_agent_reloads",
        "iron_agent_config_info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    let n = sample(
        &text,
        r#"iron_agent_requests_total{action="allow",policy="ci",protocol="http/1.1"}"#,
    );
    assert!(n.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        sample(
            &text,
            r#"iron_agent_request_duration_seconds_bucket{le="0.016",action="allow"}"#
        )
        .is_some_and(|n| n >= 1.0)
            || text.contains(
                r#"iron_agent_request_duration_seconds_bucket{action="allow",le="0.016"}"#
            ),
        "{text}"
    );
    assert!(sample(&text, r#"iron_agent_reloads_total{result="failure"}"#).is_some());
    assert!(sample(&text, r#"iron_agent_reloads_total{result="success"}"#).is_some());
    assert!(m.otel_dropped_total() >= 2);
}

#[test]
fn config_hash_has_one_current_value() {
    let m = Metrics::new();
    m.set_config_hash("sha256:aaa");
    m.set_config_hash("sha256:bbb");
    let text = m.encode();
    let current: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iron_agent_config_info{"))
        .collect();
    // Other tests may set their own hash concurrently; never two at once.
    assert_eq!(current.len(), 1, "{text}");
}

#[test]
fn kernel_counters_are_read_at_scrape_time() {
    let m = Metrics::new();
    let value = Arc::new(std::sync::atomic::AtomicU64::new(3));
    let v = value.clone();
    m.set_kernel_source(Some(Arc::new(move || {
        Some(vec![
            KernelCounter {
                family: KernelFamily::Redirect,
                label: "https".into(),
                value: v.load(std::sync::atomic::Ordering::Relaxed),
            },
            KernelCounter {
                family: KernelFamily::Denial,
                label: "tcp".into(),
                value: 1,
            },
        ])
    })));
    let text = m.encode();
    assert_eq!(
        sample(&text, r#"iron_agent_ebpf_redirects_total{target="https"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"iron_agent_ebpf_denials_total{reason="tcp"}"#),
        Some(1.0)
    );
    value.store(7, std::sync::atomic::Ordering::Relaxed);
    let text = m.encode();
    assert_eq!(
        sample(&text, r#"iron_agent_ebpf_redirects_total{target="https"}"#),
        Some(7.0)
    );
    m.set_kernel_source(None);
    assert!(!m.encode().contains("iron_agent_ebpf_"));
}

/// The handle cache counts each label set on its own series, the first sample included.
#[test]
fn cached_handles_count_on_their_own_label_set() {
    let m = Metrics::new();
    let get = |series: &str| sample(&m.encode(), series).unwrap_or(0.0);
    let a = r#"iron_agent_transform_actions_total{transform="cache_probe",phase="request",action="allow"}"#;
    let b = r#"iron_agent_transform_actions_total{transform="cache_probe",phase="response",action="allow"}"#;
    let p = r#"iron_agent_requests_total{action="stub",policy="cache_probe",protocol="https"}"#;
    let q = r#"iron_agent_requests_total{action="stub",policy="",protocol="https"}"#;
    let (a0, b0, p0, q0) = (get(a), get(b), get(p), get(q));
    for _ in 0..3 {
        m.transform("cache_probe", "request", "allow");
        m.request("stub", Some("cache_probe"), "https", 1.0);
    }
    m.transform("cache_probe", "response", "allow");
    m.request("stub", None, "https", 1.0);
    assert_eq!(get(a) - a0, 3.0);
    assert_eq!(get(b) - b0, 1.0);
    assert_eq!(get(p) - p0, 3.0);
    assert!(get(q) - q0 >= 1.0);
}
