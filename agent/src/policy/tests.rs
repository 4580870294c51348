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
    }))
}

fn judge(p: &Policy, host: &str, requests_follow: bool) -> ConnDecision {
    p.judge_connection(&ConnectionCheck {
        host: &HostName::new(host),
        dest_ip: None,
        requests_follow,
    })
}

fn api_rule() -> RuleConfig {
    RuleConfig {
        host: Some("api.test".into()),
        cidr: None,
        methods: vec!["GET".into()],
        paths: vec!["/v1/*".into()],
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
    }))]);
    assert!(p.allows_ip("10.1.2.3".parse().unwrap()));
    assert!(p.allows_ip("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!p.allows_ip("192.0.2.1".parse().unwrap()));
    let d = p.judge_connection(&ConnectionCheck {
        host: &HostName::new("name.test"),
        dest_ip: Some("10.9.9.9".parse().unwrap()),
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
