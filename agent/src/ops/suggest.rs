//! `iron-agent policy suggest`: the minimal allowlist that admits what an audit log recorded
//! (typically one made in learn mode), per pipeline (top level or `intercept.policies`
//! entry): hosts first, collapsed to `*.parent` when [`MIN_SIBLINGS`] or more subdomains of
//! one parent were reached, then method + path rules with the paths collapsed as
//! [`super::suggest_paths`] describes.
//!
//! Where each recorded request goes:
//! - an sni-only connection (`protocol: tls`), a tunnel carrying neither TLS nor HTTP, or a
//!   host reached only by tunnel setups: its host goes to `domains` (no method or path was
//!   ever visible, so a rule with methods or paths could not admit it);
//! - any other request: a `rules` entry for its host with its method and path pattern;
//! - left out, and counted by why: PostgreSQL sessions, requests the agent refused before
//!   any policy (`reason`), and requests an allowlist denied (an enforcing run: review those
//!   by hand rather than allow them blindly).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::audit_log::{AuditLine, AuditLog};
use super::suggest_paths;
use crate::policy::{ALLOWLIST, LEARN_KEY, WOULD_DENY};

/// Sibling subdomains of one parent from which they become `*.parent`.
pub const MIN_SIBLINGS: usize = 3;

/// Parents under which names belong to different owners: never collapsed, since
/// `*.s3.amazonaws.com` would admit every bucket, anyone's.
const SHARED_PARENTS: [&str; 12] = [
    "amazonaws.com",
    "s3.amazonaws.com",
    "cloudfront.net",
    "azurewebsites.net",
    "blob.core.windows.net",
    "appspot.com",
    "github.io",
    "githubusercontent.com",
    "herokuapp.com",
    "netlify.app",
    "vercel.app",
    "workers.dev",
];

/// The whole proposal.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    /// The audit log read.
    pub source: String,
    /// Request records in the log.
    pub records: usize,
    /// Records the suggestion admits.
    pub covered: usize,
    /// Records that passed only because an allowlist was in learn (or warn) mode.
    pub would_deny: usize,
    /// Records left out, by why.
    pub left_out: BTreeMap<String, usize>,
    pub pipelines: Vec<Pipeline>,
}

/// The allowlist proposed for one pipeline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scope {
    /// The pipeline in the `--config` file: 0 the top level, i + 1 `intercept.policies[i]`
    /// (absent without `--config`).
    pub profile: Option<usize>,
    /// The recorded `policy` name; absent: the top-level `transforms`.
    pub policy: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    pub scope: Scope,
    pub requests: usize,
    /// `user`, `uid:N` or `-`, as recorded.
    pub identities: Vec<String>,
    pub domains: Vec<Domain>,
    pub rules: Vec<SuggestedRule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub host: String,
    pub requests: usize,
    /// The hosts a `*.parent` entry was collapsed from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuggestedRule {
    pub host: String,
    pub methods: Vec<String>,
    pub paths: Vec<PathPattern>,
    pub requests: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathPattern {
    pub path: String,
    pub requests: usize,
}

/// What one host (or collapsed parent) saw within a pipeline.
#[derive(Debug, Default, Clone)]
struct HostSeen {
    requests: usize,
    /// Reached without a visible request (sni-only, opaque tunnel) or only by tunnel setups.
    host_only: bool,
    tunnel_setups: usize,
    /// Requests per (method, path).
    http: BTreeMap<(String, String), usize>,
    from: BTreeSet<String>,
}

impl HostSeen {
    fn merge(&mut self, o: HostSeen) {
        self.requests += o.requests;
        self.host_only |= o.host_only;
        self.tunnel_setups += o.tunnel_setups;
        for (k, n) in o.http {
            *self.http.entry(k).or_default() += n;
        }
        self.from.extend(o.from);
    }
}

#[derive(Debug, Default)]
struct Acc {
    identities: BTreeSet<String>,
    hosts: BTreeMap<String, HostSeen>,
}

/// Why a record is not admitted by the suggestion (`None`: it is).
fn left_out(r: &AuditLine) -> Option<&'static str> {
    if r.protocol == "postgres" || r.postgres.is_some() {
        return Some("postgres session (not judged by allowlists)");
    }
    if r.reason.is_some() {
        return Some("refused by the agent before any policy (reason set)");
    }
    if host_of(&r.host).is_empty() {
        return Some("no host");
    }
    let denied = r
        .request_transforms
        .iter()
        .any(|t| t.name == ALLOWLIST && t.action == "reject");
    denied.then_some("denied by an allowlist (not added: review by hand)")
}

/// Whether an allowlist let the record through only because it did not enforce.
fn passed_unmatched(r: &AuditLine) -> bool {
    r.request_transforms.iter().any(|t| {
        t.name == ALLOWLIST
            && (t.annotations.get(LEARN_KEY).and_then(|v| v.as_str()) == Some(WOULD_DENY)
                || t.annotations.get("action").and_then(|v| v.as_str()) == Some("warn"))
    })
}

/// `API.test:8443` → `api.test`; `[::1]:80` → `[::1]`; one trailing dot dropped.
pub fn host_of(authority: &str) -> String {
    let h = match authority.parse::<http::uri::Authority>() {
        Ok(a) => a.host().to_string(),
        Err(_) => authority.to_string(),
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Builds the suggestion; `scope` says which pipeline judged a record (by the `--config` file,
/// else by the recorded `policy`).
pub fn suggest(source: &str, log: &AuditLog, scope: &dyn Fn(&AuditLine) -> Scope) -> Suggestion {
    let mut s = Suggestion {
        source: source.to_string(),
        records: log.records.len(),
        covered: 0,
        would_deny: 0,
        left_out: BTreeMap::new(),
        pipelines: Vec::new(),
    };
    let mut accs: BTreeMap<Scope, Acc> = BTreeMap::new();
    for r in &log.records {
        if let Some(why) = left_out(r) {
            *s.left_out.entry(why.to_string()).or_default() += 1;
            continue;
        }
        s.covered += 1;
        s.would_deny += usize::from(passed_unmatched(r));
        let acc = accs.entry(scope(r)).or_default();
        acc.identities.insert(r.identity());
        let host = host_of(&r.host);
        let seen = acc.hosts.entry(host.clone()).or_default();
        seen.requests += 1;
        seen.from.insert(host);
        match r.protocol.as_str() {
            "connect" | "socks5" => seen.tunnel_setups += 1,
            "tls" | "unknown" => seen.host_only = true,
            _ if r.method.is_empty() => seen.host_only = true,
            _ => {
                let path = if r.path.is_empty() { "/" } else { &r.path };
                let key = (r.method.to_ascii_uppercase(), path.to_string());
                *seen.http.entry(key).or_default() += 1;
            }
        }
    }
    for (scope, acc) in accs {
        s.pipelines.push(pipeline(scope, acc));
    }
    s
}

fn pipeline(scope: Scope, acc: Acc) -> Pipeline {
    let hosts = collapse_hosts(acc.hosts);
    let mut p = Pipeline {
        scope,
        requests: hosts.values().map(|h| h.requests).sum(),
        identities: acc.identities.into_iter().collect(),
        domains: Vec::new(),
        rules: Vec::new(),
    };
    for (host, mut seen) in hosts {
        seen.host_only |= seen.http.is_empty();
        let from: Vec<String> = if seen.from.len() > 1 {
            seen.from.iter().cloned().collect()
        } else {
            Vec::new()
        };
        if seen.host_only {
            p.domains.push(Domain {
                host,
                requests: seen.requests,
                from,
            });
            continue;
        }
        p.rules.extend(rules_of(&host, &seen, &from));
    }
    p
}

/// One rule per set of methods that share their path patterns.
fn rules_of(host: &str, seen: &HostSeen, from: &[String]) -> Vec<SuggestedRule> {
    let patterns = suggest_paths::collapse(&seen.http);
    let mut methods_of: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
    for ((path, method), n) in patterns {
        let e = methods_of.entry(path).or_default();
        e.0.insert(method);
        e.1 += n;
    }
    let mut by_methods: BTreeMap<Vec<String>, Vec<PathPattern>> = BTreeMap::new();
    for (path, (methods, requests)) in methods_of {
        by_methods
            .entry(methods.into_iter().collect())
            .or_default()
            .push(PathPattern { path, requests });
    }
    let mut out: Vec<SuggestedRule> = by_methods
        .into_iter()
        .map(|(methods, paths)| SuggestedRule {
            host: host.to_string(),
            requests: paths.iter().map(|p| p.requests).sum(),
            methods,
            paths,
            from: from.to_vec(),
        })
        .collect();
    // The tunnel setups to the host are admitted by any of its rules (by destination).
    if let Some(first) = out.first_mut() {
        first.requests += seen.tunnel_setups;
    }
    out
}

/// `a.x.com`, `b.x.com`, `c.x.com` (and `x.com` itself) → `*.x.com`, when the parent has at
/// least two labels and is not a shared hosting domain. IP literals are never collapsed.
fn collapse_hosts(hosts: BTreeMap<String, HostSeen>) -> BTreeMap<String, HostSeen> {
    let parent_of = |h: &str| -> Option<String> {
        let literal = h.starts_with('[') || h.parse::<std::net::IpAddr>().is_ok();
        let (_, parent) = h.split_once('.')?;
        (!literal && parent.contains('.') && !SHARED_PARENTS.contains(&parent))
            .then(|| parent.to_string())
    };
    let mut children: BTreeMap<String, usize> = BTreeMap::new();
    for h in hosts.keys() {
        if let Some(p) = parent_of(h) {
            *children.entry(p).or_default() += 1;
        }
    }
    let mut out: BTreeMap<String, HostSeen> = BTreeMap::new();
    for (h, seen) in hosts {
        let wild = match parent_of(&h) {
            Some(p) if children.get(&p).is_some_and(|n| *n >= MIN_SIBLINGS) => format!("*.{p}"),
            _ if children.get(&h).is_some_and(|n| *n >= MIN_SIBLINGS) => format!("*.{h}"),
            _ => h,
        };
        out.entry(wild).or_default().merge(seen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(n: usize) -> HostSeen {
        HostSeen {
            requests: n,
            ..Default::default()
        }
    }

    fn hosts(list: &[&str]) -> Vec<String> {
        let m: BTreeMap<String, HostSeen> = list
            .iter()
            .map(|h| {
                let mut s = seen(1);
                s.from.insert(h.to_string());
                (h.to_string(), s)
            })
            .collect();
        collapse_hosts(m).into_keys().collect()
    }

    #[test]
    fn three_siblings_collapse_two_do_not() {
        assert_eq!(
            hosts(&[
                "a.pkg.test",
                "b.pkg.test",
                "c.pkg.test",
                "pkg.test",
                "x.other.test"
            ]),
            ["*.pkg.test", "x.other.test"]
        );
        assert_eq!(
            hosts(&["a.pkg.test", "b.pkg.test"]),
            ["a.pkg.test", "b.pkg.test"]
        );
    }

    #[test]
    fn never_a_public_suffix_or_a_shared_host() {
        // `*.com` would allow the world; `*.s3.amazonaws.com` every bucket.
        assert_eq!(
            hosts(&["a.com", "b.com", "c.com"]),
            ["a.com", "b.com", "c.com"]
        );
        let s3 = [
            "a.s3.amazonaws.com",
            "b.s3.amazonaws.com",
            "c.s3.amazonaws.com",
        ];
        assert_eq!(hosts(&s3), s3);
        let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
        assert_eq!(hosts(&ips), ips);
    }

    #[test]
    fn records_go_to_domains_rules_or_left_out() {
        let log = AuditLog::parse(concat!(
            "{\"msg\":\"request\",\"host\":\"api.test:8443\",\"method\":\"GET\",\"path\":\"/v1/x\",\"action\":\"allow\",\"protocol\":\"http/1.1\",\"request_transforms\":[{\"name\":\"allowlist\",\"action\":\"allow\",\"annotations\":{\"learn\":\"would_deny\"}}],\"user\":\"ci\"}\n",
            "{\"msg\":\"request\",\"host\":\"api.test\",\"method\":\"CONNECT\",\"path\":\"\",\"action\":\"allow\",\"protocol\":\"connect\"}\n",
            "{\"msg\":\"request\",\"host\":\"sni.test\",\"method\":\"\",\"path\":\"\",\"action\":\"allow\",\"protocol\":\"tls\"}\n",
            "{\"msg\":\"request\",\"host\":\"bad.test\",\"method\":\"GET\",\"path\":\"/\",\"action\":\"reject\",\"request_transforms\":[{\"name\":\"allowlist\",\"action\":\"reject\"}]}\n",
            "{\"msg\":\"request\",\"host\":\"b.test\",\"method\":\"GET\",\"path\":\"/\",\"action\":\"reject\",\"reason\":\"dot_segments\"}\n",
            "{\"msg\":\"request\",\"host\":\"ci.test\",\"method\":\"GET\",\"path\":\"/\",\"action\":\"allow\",\"policy\":\"build\"}\n",
        ));
        let s = suggest("a.jsonl", &log, &|r| Scope {
            profile: None,
            policy: r.policy.clone(),
        });
        assert_eq!((s.records, s.covered, s.would_deny), (6, 4, 1));
        assert_eq!(s.left_out.values().sum::<usize>(), 2);
        let top = &s.pipelines[0];
        assert_eq!(top.scope.policy, None);
        assert_eq!(top.identities, ["-", "ci"]);
        assert_eq!(top.domains.len(), 1);
        assert_eq!(top.domains[0].host, "sni.test");
        assert_eq!(top.rules.len(), 1);
        let r = &top.rules[0];
        assert_eq!((r.host.as_str(), r.requests), ("api.test", 2));
        assert_eq!(r.methods, ["GET"]);
        assert_eq!(r.paths[0].path, "/v1/x");
        assert_eq!(s.pipelines[1].scope.policy.as_deref(), Some("build"));
    }
}
