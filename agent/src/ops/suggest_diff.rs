//! `policy suggest --diff F`: the suggestion against the allowlists F has now, per pipeline:
//! which `domains`, `cidrs` and rules it adds and which it drops. A rule counts as one entry
//! per path (`rule GET,POST api.test /v1/*`), so splitting or merging rules is not a change.

use std::collections::BTreeSet;

use serde::Serialize;

use super::suggest::{Pipeline, Suggestion};
use crate::config::transforms::AllowlistConfig;
use crate::config::{Config, RuleConfig, TransformEntry, TransformSpec};

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub config: String,
    pub pipelines: Vec<PipelineDiff>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineDiff {
    /// `transforms (top level)` or `intercept.policies[0] (ci)`.
    pub pipeline: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

impl Diff {
    pub fn changes(&self) -> usize {
        self.pipelines
            .iter()
            .map(|p| p.added.len() + p.removed.len())
            .sum()
    }
}

fn rule_entries(host: &str, methods: &[String], paths: &[String], out: &mut BTreeSet<String>) {
    let mut m: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
    m.sort();
    m.dedup();
    let methods = if m.is_empty() || m == ["*"] {
        "*".to_string()
    } else {
        m.join(",")
    };
    if paths.is_empty() {
        out.insert(format!("rule {methods} {host} *"));
    }
    for p in paths {
        out.insert(format!("rule {methods} {host} {p}"));
    }
}

/// The entries of the allowlists in `entries` (several allowlists: all of their entries).
fn existing(entries: &[TransformEntry]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lists = entries.iter().filter_map(|e| match &e.spec {
        TransformSpec::Allowlist(a) => Some(a),
        _ => None,
    });
    for a in lists {
        add_config(a, &mut out);
    }
    out
}

fn add_config(a: &AllowlistConfig, out: &mut BTreeSet<String>) {
    for d in &a.domains {
        out.insert(format!("domain {}", d.to_ascii_lowercase()));
    }
    for c in &a.cidrs {
        out.insert(format!("cidr {}", c.0));
    }
    for r in &a.rules {
        rule_entries(&dest(r), &r.methods, &r.paths, out);
    }
}

fn dest(r: &RuleConfig) -> String {
    let d = match (&r.host, &r.cidr) {
        (_, Some(c)) => c.0.to_string(),
        (Some(h), None) => h.to_ascii_lowercase(),
        (None, None) => String::new(),
    };
    match &r.source_ip {
        Some(s) => format!("{d} from {}", s.0),
        None => d,
    }
}

fn suggested(p: &Pipeline) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in &p.domains {
        out.insert(format!("domain {}", d.host));
    }
    for r in &p.rules {
        let paths: Vec<String> = r.paths.iter().map(|p| p.path.clone()).collect();
        rule_entries(&r.host, &r.methods, &paths, &mut out);
    }
    out
}

/// Compares each suggested pipeline with the same pipeline of `cfg` (the top level, or the
/// `intercept.policies` entry of the recorded name).
pub fn diff(s: &Suggestion, cfg: &Config, name: &str) -> Diff {
    let mut out = Diff {
        config: name.to_string(),
        pipelines: Vec::new(),
    };
    for p in &s.pipelines {
        let (label, have) = match &p.scope.policy {
            None => (
                "transforms (top level)".to_string(),
                existing(&cfg.transforms),
            ),
            Some(policy) => match cfg
                .intercept
                .policies
                .iter()
                .position(|c| c.name.as_deref().unwrap_or("") == policy)
            {
                Some(i) => (
                    format!("intercept.policies[{i}] ({policy})"),
                    existing(&cfg.intercept.policies[i].transforms),
                ),
                None => (
                    format!("policy {policy:?} (not in {name})"),
                    BTreeSet::new(),
                ),
            },
        };
        let want = suggested(p);
        out.pipelines.push(PipelineDiff {
            pipeline: label,
            added: want.difference(&have).cloned().collect(),
            removed: have.difference(&want).cloned().collect(),
            unchanged: want.intersection(&have).count(),
        });
    }
    out
}

pub fn render_text(d: &Diff) -> String {
    let mut s = format!(
        "Suggested allowlist against {}: {} changes.\n",
        d.config,
        d.changes()
    );
    for p in &d.pipelines {
        s.push_str(&format!("\n{}:\n", p.pipeline));
        for a in &p.added {
            s.push_str(&format!("+ {a}\n"));
        }
        for r in &p.removed {
            s.push_str(&format!("- {r}\n"));
        }
        s.push_str(&format!("  ({} unchanged)\n", p.unchanged));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::audit_log::AuditLog;
    use crate::ops::suggest::{Scope, suggest};

    #[test]
    fn added_and_removed_entries_per_pipeline() {
        let cfg = crate::config::parse(
            "dns: {proxy_ip: 10.0.0.2}\ntls: {mode: sni-only}\ntransforms:\n  - name: allowlist\n    config:\n      domains: [old.test]\n      rules:\n        - {host: api.test, methods: [get], paths: [/v1/*]}\n",
        )
        .unwrap();
        let log = AuditLog::parse(concat!(
            "{\"msg\":\"request\",\"host\":\"api.test\",\"method\":\"GET\",\"path\":\"/v1/*\",\"action\":\"allow\"}\n",
            "{\"msg\":\"request\",\"host\":\"new.test\",\"method\":\"\",\"path\":\"\",\"action\":\"allow\",\"protocol\":\"tls\"}\n",
        ));
        let s = suggest("a.jsonl", &log, &|_| Scope {
            profile: None,
            policy: None,
        });
        let d = diff(&s, &cfg, "c.yaml");
        let p = &d.pipelines[0];
        assert_eq!(p.added, ["domain new.test"]);
        assert_eq!(p.removed, ["domain old.test"]);
        assert_eq!(p.unchanged, 1);
        let text = render_text(&d);
        assert!(
            text.contains("+ domain new.test\n- domain old.test\n"),
            "{text}"
        );
    }
}
