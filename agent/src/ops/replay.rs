//! `iron-agent policy replay`: re-judges every recorded request against a candidate config
//! and reports what flips, grouped by host and deciding rule.
//!
//! The audit log records destination, method, path and identity, not headers or bodies, so
//! replay re-judges what the allowlists decide (the same [`AllowRules`](crate::policy::AllowRules)
//! the agent runs); a verdict of a transform that reads headers or bodies cannot be replayed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::audit_log::{AuditLine, AuditLog};
use super::dry_run::{Evaluator, Selected};
use super::markdown::cell;
use super::request::Identity;
use crate::identify::HostName;
use crate::policy::{ALLOWLIST, MatchInput};

#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub config: String,
    pub records: usize,
    pub replayed: usize,
    pub unchanged: usize,
    /// Records replay does not judge, by why.
    pub skipped: BTreeMap<String, usize>,
    pub allow_to_deny: Vec<Flip>,
    pub deny_to_allow: Vec<Flip>,
}

/// Requests to one host whose verdict flipped, with the rule that now decides.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Flip {
    pub host: String,
    pub rule: String,
    pub count: usize,
    /// Up to three `METHOD path (identity)`.
    pub samples: Vec<String>,
}

impl Replay {
    /// Whether something allowed before would now be denied (exit status 1).
    pub fn tightens(&self) -> bool {
        !self.allow_to_deny.is_empty()
    }
}

/// The allowlists' old verdict from the record's traces; `Err(why)` when replay cannot judge it.
fn old_verdict(r: &AuditLine) -> Result<bool, &'static str> {
    if r.protocol == "postgres" || r.postgres.is_some() {
        return Err("postgres session");
    }
    if r.reason.is_some() {
        return Err("refused by the agent before any policy (reason set)");
    }
    let gates: Vec<&str> = r
        .request_transforms
        .iter()
        .filter(|t| t.name == ALLOWLIST)
        .map(|t| t.action.as_str())
        .collect();
    if gates.contains(&"reject") {
        return Ok(false);
    }
    if r.action == "reject" && gates.is_empty() {
        return Err("rejected before any allowlist ran");
    }
    Ok(true)
}

impl Evaluator {
    /// The profile a recorded request is judged by in this config: its user's or uid's
    /// `intercept.policies` entry, else the entry named like the recorded `policy`, else the
    /// top level.
    pub fn select_record(&self, r: &AuditLine) -> Selected {
        let mut fallback = None;
        let ids = [
            r.user.clone().map(Identity::User),
            r.uid.map(Identity::Uid),
            r.policy
                .clone()
                .filter(|p| !p.is_empty())
                .map(Identity::Policy),
        ];
        for id in ids.iter().flatten() {
            if let Ok(sel) = self.select(Some(id)) {
                if sel.profile != 0 || sel.denied.is_some() {
                    return sel;
                }
                fallback.get_or_insert(sel);
            }
        }
        fallback.unwrap_or_else(|| self.select(None).unwrap_or_else(|_| unreachable_top()))
    }

    /// Replays every record of `log`.
    pub fn replay(&self, log: &AuditLog) -> Replay {
        let mut out = Replay {
            config: self.file.clone(),
            records: log.records.len(),
            replayed: 0,
            unchanged: 0,
            skipped: BTreeMap::new(),
            allow_to_deny: Vec::new(),
            deny_to_allow: Vec::new(),
        };
        let mut flips: BTreeMap<(bool, String, String), Flip> = BTreeMap::new();
        for r in &log.records {
            let old = match old_verdict(r) {
                Ok(v) => v,
                Err(why) => {
                    *out.skipped.entry(why.to_string()).or_default() += 1;
                    continue;
                }
            };
            out.replayed += 1;
            let (new, rule) = self.rejudge(r);
            if new == old {
                out.unchanged += 1;
                continue;
            }
            let host = r.host.clone();
            let f = flips
                .entry((old, host.clone(), rule.clone()))
                .or_insert_with(|| Flip {
                    host,
                    rule,
                    count: 0,
                    samples: Vec::new(),
                });
            f.count += 1;
            let sample = format!("{} {} ({})", r.method, r.path, r.identity());
            if f.samples.len() < 3 && !f.samples.contains(&sample) {
                f.samples.push(sample);
            }
        }
        for ((was_allowed, ..), f) in flips {
            if was_allowed {
                out.allow_to_deny.push(f);
            } else {
                out.deny_to_allow.push(f);
            }
        }
        for list in [&mut out.allow_to_deny, &mut out.deny_to_allow] {
            list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.host.cmp(&b.host)));
        }
        out
    }

    /// The new verdict on a record and the rule that gives it.
    fn rejudge(&self, r: &AuditLine) -> (bool, String) {
        let sel = self.select_record(r);
        if let Some(field) = sel.denied {
            return (false, format!("{field} (identity denied)"));
        }
        let host = HostName::new(host_only(&r.host));
        let follow = match r.protocol.as_str() {
            "connect" | "socks5" => Some(true),
            "tls" => Some(false),
            _ => None,
        };
        let input = MatchInput {
            host: &host,
            method: &r.method,
            path: &r.path,
            dest_ip: r.orig_dst.as_deref().and_then(ip_of),
            client_ip: ip_of(&r.remote_addr),
        };
        let j = self.judge(sel.profile, &input, follow);
        let rule = match j.decider {
            Some(d) => d.describe(),
            None => format!("no allowlist in {}", sel.label),
        };
        (j.allowed, rule)
    }
}

/// Never taken: selecting the top level cannot fail.
fn unreachable_top() -> Selected {
    Selected {
        profile: 0,
        label: "transforms (top level)".into(),
        denied: None,
        caller: Default::default(),
    }
}

/// `api.test:8443` → `api.test`; `[::1]:80` → `[::1]`.
fn host_only(authority: &str) -> &str {
    match authority.parse::<http::uri::Authority>() {
        Ok(a) => {
            let h = a.host();
            authority
                .find(h)
                .map_or(authority, |i| &authority[i..i + h.len()])
        }
        Err(_) => authority,
    }
}

fn ip_of(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| addr.parse::<IpAddr>())
        .ok()
}

pub fn render_markdown(r: &Replay) -> String {
    let mut s = format!("## Policy replay against `{}`\n\n", r.config);
    let skipped: usize = r.skipped.values().sum();
    s.push_str(&format!(
        "{} recorded requests: {} replayed, {} unchanged, {} allow → deny, {} deny → allow, {} skipped.\n",
        r.records,
        r.replayed,
        r.unchanged,
        r.allow_to_deny.iter().map(|f| f.count).sum::<usize>(),
        r.deny_to_allow.iter().map(|f| f.count).sum::<usize>(),
        skipped
    ));
    for (title, list) in [
        ("allow → deny", &r.allow_to_deny),
        ("deny → allow", &r.deny_to_allow),
    ] {
        if list.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "\n### {title}\n\n| host | rule | requests | examples |\n|---|---|---:|---|\n"
        ));
        for f in list {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                cell(&f.host),
                cell(&f.rule),
                f.count,
                cell(&f.samples.join("; "))
            ));
        }
    }
    if skipped > 0 {
        s.push_str("\nNot replayed:\n\n");
        for (why, n) in &r.skipped {
            s.push_str(&format!("- {n}: {why}\n"));
        }
    }
    s
}
