use super::*;
use crate::ops::audit_log::AuditLog;
use crate::ops::suggest::suggest;
use crate::policy::{AllowRules, MatchInput};

const PRELUDE: &str = "dns: {proxy_ip: 10.0.0.2}\ntls: {mode: sni-only}\n";

fn log() -> AuditLog {
    let mut text = String::new();
    for (host, method, path, policy) in [
        ("api.test:8443", "GET", "/repos/octo/pulls", None),
        ("api.test:8443", "GET", "/repos/hello/pulls", None),
        ("api.test:8443", "GET", "/repos/world/pulls", None),
        ("api.test:8443", "POST", "/repos/octo/issues/12", None),
        ("a.pkg.test", "GET", "/simple/x/", None),
        ("b.pkg.test", "GET", "/simple/y/", None),
        ("c.pkg.test", "GET", "/simple/z/", None),
        ("ci.test", "PUT", "/upload", Some("build")),
    ] {
        let policy = policy.map_or(String::new(), |p| {
            format!(",\"policy\":\"{p}\",\"user\":\"ci\"")
        });
        text.push_str(&format!(
            "{{\"msg\":\"request\",\"host\":\"{host}\",\"method\":\"{method}\",\"path\":\"{path}\",\"action\":\"allow\"{policy}}}\n"
        ));
    }
    AuditLog::parse(&text)
}

fn allowlists(cfg: &crate::config::Config) -> Vec<AllowRules> {
    let lists = std::iter::once(&cfg.transforms)
        .chain(cfg.intercept.policies.iter().map(|p| &p.transforms));
    lists
        .flat_map(|l| l.iter())
        .filter_map(|e| match &e.spec {
            crate::config::TransformSpec::Allowlist(a) => Some(AllowRules::new(a)),
            _ => None,
        })
        .collect()
}

fn admits(rules: &AllowRules, host: &str, method: &str, path: &str) -> bool {
    let input = MatchInput {
        host,
        method,
        path,
        dest_ip: None,
        client_ip: None,
    };
    rules.judge_request(&input).admits()
}

/// The fragment parses with the agent's own loader, every recorded request is admitted by the
/// pipeline that judged it, and a new host is not.
#[test]
fn the_fragment_loads_and_admits_what_was_recorded() {
    let s = suggest("a.jsonl", &log(), &|r| Scope {
        profile: None,
        policy: r.policy.clone(),
    });
    let text = render_fragment(&s);
    assert!(text.contains("# 3 requests\n"), "{text}");
    assert!(text.contains("\"/repos/*/pulls\"  # 3 requests"), "{text}");
    assert!(text.contains("\"*.pkg.test\""), "{text}");
    let cfg = crate::config::load_str(&format!("{PRELUDE}{text}"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let lists = allowlists(&cfg);
    assert_eq!(lists.len(), 2, "{text}");
    let top = &lists[0];
    assert!(admits(top, "api.test", "GET", "/repos/any/pulls"));
    assert!(admits(top, "api.test", "POST", "/repos/octo/issues/99"));
    assert!(admits(top, "b.pkg.test", "GET", "/simple/y/"));
    assert!(!admits(top, "api.test", "DELETE", "/repos/octo/pulls"));
    assert!(!admits(top, "new.test", "GET", "/"));
    assert!(
        !admits(top, "ci.test", "PUT", "/upload"),
        "only the policy's"
    );
    assert!(admits(&lists[1], "ci.test", "PUT", "/upload"));
    assert_eq!(cfg.intercept.policies[0].users, ["ci"]);
}

/// With `--config`: the file's other settings and transforms stay, its allowlist is replaced,
/// and a pipeline without records keeps its allowlist minus `mode: learn`.
#[test]
fn the_suggestion_goes_into_the_config() {
    let config = format!(
        "{PRELUDE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: GH_TOKEN}}\n          inject: {{header: Authorization}}\n          rules: [{{host: api.test}}]\n  - name: allowlist\n    config:\n      mode: learn\nintercept:\n  mode: ebpf\n  policies:\n    - name: build\n      users: [ci]\n      transforms:\n        - name: allowlist\n          config: {{domains: [ci.test], mode: learn}}\n    - name: idle\n      uids: [4242]\n      transforms:\n        - name: allowlist\n          config: {{domains: [idle.test], mode: learn}}\n"
    );
    let base = crate::config::load_str(&config, &|_| None).unwrap();
    let s = suggest("a.jsonl", &log(), &|r| {
        let profile = match r.policy.as_deref() {
            Some("build") => 1,
            _ => 0,
        };
        scope_of(&base, profile)
    });
    let text = render_into(&s, &config, "c.yaml").unwrap();
    let cfg = crate::config::load_str(&text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(cfg.transforms[0].name, "secrets", "{text}");
    assert_eq!(cfg.transforms.len(), 2, "{text}");
    assert_eq!(cfg.intercept.policies[1].uids, [4242]);
    let lists = allowlists(&cfg);
    assert!(
        admits(&lists[0], "api.test", "GET", "/repos/x/pulls"),
        "{text}"
    );
    assert!(admits(&lists[1], "ci.test", "PUT", "/upload"));
    assert!(!admits(&lists[1], "ci.test", "GET", "/upload"));
    assert!(admits(&lists[2], "idle.test", "GET", "/"));
    assert!(
        !admits(&lists[2], "other.test", "GET", "/"),
        "learn mode removed"
    );
    assert!(!text.contains("learn"), "{text}");
}
