use super::*;
use crate::config::transforms::{AllowlistConfig, AnnotateConfig};
use crate::config::{Cidr, RuleConfig};

fn entry(spec: TransformSpec) -> TransformEntry {
    TransformEntry {
        name: spec.kind().to_string(),
        spec,
    }
}

fn allowlist(domains: &[&str], rules: Vec<RuleConfig>, warn: bool) -> TransformEntry {
    entry(TransformSpec::Allowlist(AllowlistConfig {
        domains: domains.iter().map(|d| d.to_string()).collect(),
        cidrs: vec![],
        rules,
        warn,
        mode: Default::default(),
    }))
}

fn judge(p: &Policy, host: &str, requests_follow: bool) -> ConnDecision {
    p.judge_connection(&ConnectionCheck {
        host: &HostName::new(host),
        dest_ip: None,
        client_ip: None,
        requests_follow,
    })
}

fn api_rule() -> RuleConfig {
    RuleConfig {
        host: Some("api.test".into()),
        cidr: None,
        methods: vec!["GET".into()],
        paths: vec!["/v1/*".into()],
        source_ip: None,
    }
}

#[test]
fn connections_are_judged_by_destination() {
    let p = Policy::from_transforms(&[allowlist(&["open.test"], vec![api_rule()], false)]);
    assert!(judge(&p, "open.test", false).allowed);
    let denied = judge(&p, "other.test", true);
    assert!(!denied.allowed);
    assert_eq!(denied.traces.len(), 1);
    assert_eq!(denied.traces[0].name, "allowlist");
    assert_eq!(denied.traces[0].action, TraceAction::Reject);
    // Tunnel setup: the restricted rule admits, its requests are judged later.
    assert!(judge(&p, "api.test", true).allowed);
    // sni-only: no request will ever show a method, so the rule cannot match.
    assert!(!judge(&p, "api.test", false).allowed);
}

#[test]
fn warn_mode_admits_and_annotates() {
    let p = Policy::from_transforms(&[allowlist(&[], vec![], true)]);
    let d = judge(&p, "x.test", false);
    assert!(d.allowed);
    assert_eq!(d.traces[0].action, TraceAction::Allow);
    assert_eq!(d.traces[0].annotations["action"], "warn");
    assert!(p.may_allow_host("anything.test"));
}

#[test]
fn without_an_allowlist_everything_is_allowed_and_nothing_is_traced() {
    let annotate = entry(TransformSpec::Annotate(AnnotateConfig::default()));
    let p = Policy::from_transforms(&[annotate]);
    assert!(p.allows_everything());
    let d = judge(&p, "x.test", false);
    assert!(d.allowed);
    assert!(d.traces.is_empty());
    assert!(p.may_allow_host("x.test"));
}

#[test]
fn every_allowlist_must_admit_and_the_first_refusal_stops() {
    let p = Policy::from_transforms(&[
        allowlist(&["*.test"], vec![], false),
        allowlist(&["a.test"], vec![], false),
        allowlist(&["b.test"], vec![], false),
    ]);
    assert!(!p.allows_everything());
    let d = judge(&p, "a.test", false);
    assert!(!d.allowed);
    let actions: Vec<_> = d.traces.iter().map(|t| t.action).collect();
    assert_eq!(
        actions,
        [TraceAction::Allow, TraceAction::Allow, TraceAction::Reject]
    );
    assert!(!p.may_allow_host("a.test"));
    let only_first = Policy::from_transforms(&[allowlist(&["*.test"], vec![], false)]);
    assert!(only_first.may_allow_host("deep.a.test"));
    assert!(!only_first.may_allow_host("example.com"));
}

#[test]
fn cidr_rules_allow_ips_and_destinations() {
    let p = Policy::from_transforms(&[entry(TransformSpec::Allowlist(AllowlistConfig {
        domains: vec![],
        cidrs: vec![Cidr("10.0.0.0/8".parse().unwrap())],
        rules: vec![],
        warn: false,
        mode: Default::default(),
    }))]);
    assert!(p.allows_ip("10.1.2.3".parse().unwrap()));
    assert!(p.allows_ip("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!p.allows_ip("192.0.2.1".parse().unwrap()));
    let d = p.judge_connection(&ConnectionCheck {
        host: &HostName::new("name.test"),
        dest_ip: Some("10.9.9.9".parse().unwrap()),
        client_ip: None,
        requests_follow: false,
    });
    assert!(d.allowed, "the original destination is in an allowed CIDR");
}

#[tokio::test]
async fn destination_check_without_lookup() {
    let resolver = Resolver::new(Some("127.0.0.1:9".parse().unwrap())).unwrap();
    let p = Policy::from_transforms(&[entry(TransformSpec::Allowlist(AllowlistConfig {
        domains: vec!["*".into()],
        cidrs: vec![Cidr("203.0.113.0/24".parse().unwrap())],
        rules: vec![],
        warn: false,
        mode: Default::default(),
    }))]);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // An IP-literal host must be the address the workload connected to.
    let literal = HostName::new("[::ffff:192.0.2.1]");
    assert!(
        p.destination_matches(&resolver, &literal, ip("192.0.2.1"))
            .await
    );
    assert!(
        !p.destination_matches(&resolver, &literal, ip("192.0.2.2"))
            .await
    );
    // A destination a CIDR rule names needs no lookup.
    let name = HostName::new("any.test");
    assert!(
        p.destination_matches(&resolver, &name, ip("203.0.113.7"))
            .await
    );
}

/// A DNS server on 127.0.0.1 that answers every A query with `ip` (TTL `ttl`), every other type
/// with no data, and counts the queries it receives.
fn counting_dns(
    ip: std::net::Ipv4Addr,
    ttl: u32,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        // Ends with the test process.
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            seen.fetch_add(1, Ordering::SeqCst);
            let q = &buf[..n];
            let mut i = 12;
            while i < n && q[i] != 0 {
                i += usize::from(q[i]) + 1;
            }
            let Some(question) = q.get(12..i + 5) else {
                continue;
            };
            let is_a = q.get(i + 1..i + 3) == Some(&[0, 1][..]);
            let mut r = vec![q[0], q[1], 0x84 | (q[2] & 1), 0x80, 0, 1, 0, u8::from(is_a)];
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(question);
            if is_a {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
                r.extend_from_slice(&ttl.to_be_bytes());
                r.extend_from_slice(&[0, 4]);
                r.extend_from_slice(&ip.octets());
            }
            let _ = sock.send_to(&r, peer);
        }
    });
    (addr, count)
}

fn allow_all() -> Policy {
    Policy::from_transforms(&[entry(TransformSpec::Allowlist(AllowlistConfig {
        domains: vec!["*".into()],
        cidrs: vec![],
        rules: vec![],
        warn: false,
        mode: Default::default(),
    }))])
}

#[tokio::test]
async fn destination_verdicts_are_cached_for_the_answer_ttl() {
    use std::sync::atomic::Ordering;
    let (dns, queries) = counting_dns("192.0.2.10".parse().unwrap(), 300);
    let resolver = Resolver::new(Some(dns)).unwrap();
    let p = allow_all();
    let host = HostName::new("cached.test.");
    let dest: IpAddr = "192.0.2.10".parse().unwrap();
    assert!(p.destination_matches(&resolver, &host, dest).await);
    let after_first = queries.load(Ordering::SeqCst);
    assert!(after_first >= 1, "the first check must ask the resolver");
    assert_eq!(p.verdicts().len(), 1);
    // Later connections to the same pair (v4-mapped too) ask nothing.
    for _ in 0..5 {
        assert!(p.destination_matches(&resolver, &host, dest).await);
    }
    let mapped: IpAddr = "::ffff:192.0.2.10".parse().unwrap();
    assert!(p.destination_matches(&resolver, &host, mapped).await);
    assert_eq!(queries.load(Ordering::SeqCst), after_first);
    // Another address under the same name is still checked, and refused.
    let other: IpAddr = "192.0.2.11".parse().unwrap();
    assert!(!p.destination_matches(&resolver, &host, other).await);
    assert_eq!(p.verdicts().len(), 1, "mismatches are not cached");
    // A reload builds a new policy: it starts empty and asks again.
    let reloaded = allow_all();
    let before = queries.load(Ordering::SeqCst);
    assert!(reloaded.destination_matches(&resolver, &host, dest).await);
    assert!(
        queries.load(Ordering::SeqCst) > before,
        "a reload must not keep verdicts"
    );
}

#[tokio::test]
async fn destination_verdicts_expire_with_the_answer() {
    use std::sync::atomic::Ordering;
    let (dns, queries) = counting_dns("192.0.2.20".parse().unwrap(), 1);
    let resolver = Resolver::new(Some(dns)).unwrap();
    let p = allow_all();
    let host = HostName::new("short.test.");
    let dest: IpAddr = "192.0.2.20".parse().unwrap();
    assert!(p.destination_matches(&resolver, &host, dest).await);
    let first = queries.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(p.destination_matches(&resolver, &host, dest).await);
    assert!(
        queries.load(Ordering::SeqCst) > first,
        "an expired verdict must be checked again"
    );
}
