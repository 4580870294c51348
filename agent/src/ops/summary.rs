//! `iron-agent summary`: a job's audit log per identity and host: requests allowed and
//! denied, bytes, first and last time, denied samples and the credentials used (names only).

use std::collections::BTreeMap;

use serde::Serialize;

use super::audit_log::{AuditLine, AuditLog, time_key};
use super::markdown::cell;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub allowed: usize,
    pub denied: usize,
    pub errors: usize,
    pub first: Option<String>,
    pub last: Option<String>,
    pub groups: Vec<Group>,
}

/// One identity's requests to one host.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `user`, `uid:N`, or `-` (no eBPF identity).
    pub identity: String,
    /// The `intercept.policies` entry that judged (absent: the top-level pipeline).
    pub policy: Option<String>,
    pub host: String,
    /// `allow`, `stub` and `client_cancel` records.
    pub allowed: usize,
    /// `reject` records.
    pub denied: usize,
    pub errors: usize,
    /// Bytes the records report (PostgreSQL sessions); HTTP records carry no byte counts.
    pub bytes: u64,
    pub first: String,
    pub last: String,
    /// Up to five distinct `METHOD path (rejected_by)` of denied requests.
    pub denied_samples: Vec<String>,
    /// Names of the secrets and credentials injected or swapped in.
    pub credentials: Vec<String>,
}

impl Group {
    fn new(r: &AuditLine) -> Self {
        Self {
            identity: r.identity(),
            policy: r.policy.clone(),
            host: r.host.clone(),
            allowed: 0,
            denied: 0,
            errors: 0,
            bytes: 0,
            first: r.time.clone(),
            last: r.time.clone(),
            denied_samples: Vec::new(),
            credentials: Vec::new(),
        }
    }

    fn add(&mut self, r: &AuditLine) {
        match r.action.as_str() {
            "reject" => {
                self.denied += 1;
                let by = r
                    .reason
                    .as_deref()
                    .or(r.rejected_by.as_deref())
                    .unwrap_or("?");
                let sample = format!("{} {} ({by})", r.method, r.path);
                if self.denied_samples.len() < 5 && !self.denied_samples.contains(&sample) {
                    self.denied_samples.push(sample);
                }
            }
            "error" => self.errors += 1,
            _ => self.allowed += 1,
        }
        self.bytes += bytes_of(r);
        if time_key(&r.time) < time_key(&self.first) {
            self.first = r.time.clone();
        }
        if time_key(&r.time) > time_key(&self.last) {
            self.last = r.time.clone();
        }
        for c in r.credentials() {
            if !self.credentials.contains(&c) {
                self.credentials.push(c);
            }
        }
    }
}

fn bytes_of(r: &AuditLine) -> u64 {
    let Some(pg) = &r.postgres else { return 0 };
    ["bytes_from_client", "bytes_to_client"]
        .iter()
        .filter_map(|k| pg.get(k).and_then(serde_json::Value::as_u64))
        .sum()
}

pub fn summarize(log: &AuditLog) -> Summary {
    let mut groups: BTreeMap<(String, Option<String>, String), Group> = BTreeMap::new();
    for r in &log.records {
        groups
            .entry((r.identity(), r.policy.clone(), r.host.clone()))
            .or_insert_with(|| Group::new(r))
            .add(r);
    }
    let groups: Vec<Group> = groups.into_values().collect();
    let times = log.records.iter().map(|r| &r.time);
    Summary {
        requests: log.records.len(),
        allowed: groups.iter().map(|g| g.allowed).sum(),
        denied: groups.iter().map(|g| g.denied).sum(),
        errors: groups.iter().map(|g| g.errors).sum(),
        first: times.clone().min_by_key(|t| time_key(t)).cloned(),
        last: times.max_by_key(|t| time_key(t)).cloned(),
        groups,
    }
}

pub fn render_markdown(s: &Summary) -> String {
    let mut out = String::from("## Egress summary\n\n");
    out.push_str(&format!(
        "{} requests: {} allowed, {} denied, {} errors",
        s.requests, s.allowed, s.denied, s.errors
    ));
    if let (Some(f), Some(l)) = (&s.first, &s.last) {
        out.push_str(&format!(", {f} to {l}"));
    }
    out.push_str(".\n");
    if s.groups.is_empty() {
        return out;
    }
    out.push_str("\n| identity | policy | host | allowed | denied | errors | bytes | first | last | credentials |\n");
    out.push_str("|---|---|---|---:|---:|---:|---:|---|---|---|\n");
    for g in &s.groups {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&g.identity),
            cell(g.policy.as_deref().unwrap_or("-")),
            cell(&g.host),
            g.allowed,
            g.denied,
            g.errors,
            g.bytes,
            cell(&g.first),
            cell(&g.last),
            cell(&g.credentials.join(", "))
        ));
    }
    let denied: Vec<&Group> = s.groups.iter().filter(|g| g.denied > 0).collect();
    if !denied.is_empty() {
        out.push_str("\n### Denied\n\n| identity | host | requests |\n|---|---|---|\n");
        for g in denied {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                cell(&g.identity),
                cell(&g.host),
                cell(&g.denied_samples.join("; "))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_identity_and_host() {
        let log = AuditLog::parse(concat!(
            "{\"time\":\"2026-07-01T09:30:12.5Z\",\"msg\":\"request\",\"host\":\"a.test\",\"method\":\"GET\",\"path\":\"/x\",\"action\":\"allow\",\"user\":\"ci\"}\n",
            "{\"time\":\"2026-07-01T09:30:12.25Z\",\"msg\":\"request\",\"host\":\"a.test\",\"method\":\"POST\",\"path\":\"/y\",\"action\":\"reject\",\"rejected_by\":\"allowlist\",\"user\":\"ci\"}\n",
            "{\"time\":\"2026-07-01T09:30:13Z\",\"msg\":\"request\",\"host\":\"db\",\"method\":\"\",\"path\":\"\",\"action\":\"allow\",\"protocol\":\"postgres\",\"postgres\":{\"bytes_from_client\":10,\"bytes_to_client\":32}}\n",
        ));
        let s = summarize(&log);
        assert_eq!((s.requests, s.allowed, s.denied), (3, 2, 1));
        assert_eq!(s.first.as_deref(), Some("2026-07-01T09:30:12.25Z"));
        let a = &s.groups[1];
        assert_eq!((a.identity.as_str(), a.host.as_str()), ("ci", "a.test"));
        assert_eq!(a.first, "2026-07-01T09:30:12.25Z");
        assert_eq!(a.denied_samples, ["POST /y (allowlist)"]);
        assert_eq!(s.groups[0].bytes, 42);
        let md = render_markdown(&s);
        assert!(md.contains("| ci | - | a.test | 1 | 1 | 0 | 0 |"), "{md}");
    }
}
