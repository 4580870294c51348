//! A [`Suggestion`] as YAML the agent's config loader accepts: the `allowlist` entries with a
//! comment on each saying how many recorded requests it covers. Alone (a `transforms:` block,
//! plus `intercept.policies` entries for recorded policies), or put into a `--config` file in
//! place of its allowlists, everything else of that file kept.

use serde_json::Value;

use super::OpsError;
use super::suggest::{Pipeline, Scope, Suggestion};

/// Stands for an allowlist entry in the serialised config until its text is put in.
const PLACEHOLDER: &str = "__iron_agent_suggested_allowlist_";

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

fn requests(n: usize) -> String {
    if n == 1 {
        "1 request".into()
    } else {
        format!("{n} requests")
    }
}

/// `by ci, uid:1002` (nothing for records without an identity).
fn by(identities: &[String]) -> String {
    let named: Vec<&str> = identities
        .iter()
        .map(String::as_str)
        .filter(|i| *i != "-")
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" by {}", named.join(", "))
    }
}

/// The comment lines opening the output.
pub fn header(s: &Suggestion) -> String {
    let mut out = format!(
        "# Suggested by `iron-agent policy suggest` from {}: {} of {} recorded requests covered",
        s.source, s.covered, s.records
    );
    out.push_str(".\n");
    if s.would_deny > 0 {
        out.push_str(&format!(
            "# {} of them passed only because the allowlist did not enforce (learn or warn mode).\n",
            s.would_deny
        ));
    }
    for (why, n) in &s.left_out {
        out.push_str(&format!("# Left out: {}: {why}.\n", requests(*n)));
    }
    out
}

/// One `- name: allowlist` list item whose `-` is at column `indent`.
pub fn allowlist_item(p: Option<&Pipeline>, indent: usize) -> Vec<String> {
    let pad = |n: usize| " ".repeat(indent + n);
    let mut l = vec![
        format!("{}- name: allowlist", pad(0)),
        format!("{}config:", pad(2)),
    ];
    let Some(p) = p.filter(|p| !p.domains.is_empty() || !p.rules.is_empty()) else {
        l.push(format!(
            "{}domains: []  # no request recorded: denies every request",
            pad(4)
        ));
        return l;
    };
    l.push(format!(
        "{}# {}{}",
        pad(4),
        requests(p.requests),
        by(&p.identities)
    ));
    if !p.domains.is_empty() {
        l.push(format!("{}domains:", pad(4)));
        for d in &p.domains {
            let from = if d.from.is_empty() {
                String::new()
            } else {
                format!(": {}", d.from.join(", "))
            };
            l.push(format!(
                "{}- {}  # {}{from}",
                pad(6),
                q(&d.host),
                requests(d.requests)
            ));
        }
    }
    if !p.rules.is_empty() {
        l.push(format!("{}rules:", pad(4)));
    }
    for r in &p.rules {
        let from = if r.from.is_empty() {
            String::new()
        } else {
            format!(" to {}", r.from.join(", "))
        };
        l.push(format!("{}# {}{from}", pad(6), requests(r.requests)));
        l.push(format!("{}- host: {}", pad(6), q(&r.host)));
        let methods: Vec<String> = r.methods.iter().map(|m| q(m)).collect();
        l.push(format!("{}methods: [{}]", pad(8), methods.join(", ")));
        l.push(format!("{}paths:", pad(8)));
        for path in &r.paths {
            l.push(format!(
                "{}- {}  # {}",
                pad(10),
                q(&path.path),
                requests(path.requests)
            ));
        }
    }
    l
}

/// The suggestion alone: `transforms:` and, for recorded policies, `intercept.policies`.
pub fn render_fragment(s: &Suggestion) -> String {
    let mut out = header(s);
    let top = s.pipelines.iter().find(|p| p.scope.policy.is_none());
    out.push_str("transforms:\n");
    push_lines(&mut out, &allowlist_item(top, 2));
    let policies: Vec<&Pipeline> = s
        .pipelines
        .iter()
        .filter(|p| p.scope.policy.is_some())
        .collect();
    if policies.is_empty() {
        return out;
    }
    out.push_str("intercept:\n  mode: ebpf\n  policies:\n");
    for p in policies {
        out.push_str(&format!(
            "    - name: {}\n",
            q(p.scope.policy.as_deref().unwrap_or(""))
        ));
        let (users, uids) = selectors(&p.identities);
        if !users.is_empty() {
            out.push_str(&format!("      users: [{}]\n", users.join(", ")));
        }
        if !uids.is_empty() {
            out.push_str(&format!("      uids: [{}]\n", uids.join(", ")));
        }
        out.push_str("      transforms:\n");
        push_lines(&mut out, &allowlist_item(Some(p), 8));
    }
    out
}

/// Recorded identities as `users` (quoted) and `uids`.
fn selectors(identities: &[String]) -> (Vec<String>, Vec<String>) {
    let mut users = Vec::new();
    let mut uids = Vec::new();
    for i in identities {
        match i.strip_prefix("uid:") {
            Some(n) => uids.push(n.to_string()),
            None if i != "-" => users.push(q(i)),
            None => {}
        }
    }
    (users, uids)
}

fn push_lines(out: &mut String, lines: &[String]) {
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
}

fn is_allowlist(entry: &Value) -> bool {
    entry.get("name").and_then(Value::as_str) == Some(crate::policy::ALLOWLIST)
}

/// In one `transforms` list: the allowlists replaced by `placeholder` (at the first one's
/// place, else first), or, without one (no request recorded for that pipeline), kept with
/// their `mode` removed.
fn splice(list: &mut Value, placeholder: Option<String>) {
    if !list.is_array() {
        if placeholder.is_none() {
            return;
        }
        *list = Value::Array(Vec::new());
    }
    let Value::Array(entries) = list else { return };
    match placeholder {
        Some(ph) => {
            let at = entries.iter().position(is_allowlist).unwrap_or(0);
            entries.retain(|e| !is_allowlist(e));
            entries.insert(at.min(entries.len()), Value::String(ph));
        }
        None => {
            for e in entries.iter_mut().filter(|e| is_allowlist(e)) {
                if let Some(Value::Object(c)) = e.get_mut("config") {
                    c.remove("mode");
                }
            }
        }
    }
}

/// `config_text` (the `--config` file) with each pipeline's allowlists replaced by the
/// suggestion for it; pipelines without a recorded request keep theirs (`mode` removed).
pub fn render_into(s: &Suggestion, config_text: &str, name: &str) -> Result<String, OpsError> {
    let bad = |e: String| OpsError::Config(format!("{name}: {e}"));
    let mut doc: Value = serde_saphyr::from_str::<Option<Value>>(config_text)
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or_else(|| Value::Object(Default::default()));
    let Value::Object(top) = &mut doc else {
        return Err(bad("not a mapping".into()));
    };
    let find = |profile: usize| {
        s.pipelines
            .iter()
            .find(|p| p.scope.profile == Some(profile))
    };
    let mut items: Vec<&Pipeline> = Vec::new();
    let ph = hold(&mut items, find(0));
    let has_top = ph.is_some();
    splice(top.entry("transforms").or_insert(Value::Null), ph);
    if !has_top && top.get("transforms").is_some_and(Value::is_null) {
        top.remove("transforms");
    }
    if let Some(Value::Array(policies)) =
        top.get_mut("intercept").and_then(|i| i.get_mut("policies"))
    {
        for (i, p) in policies.iter_mut().enumerate() {
            let ph = hold(&mut items, find(i + 1));
            if let Value::Object(p) = p {
                splice(p.entry("transforms").or_insert(Value::Null), ph);
            }
        }
    }
    let text = serde_saphyr::to_string(&doc).map_err(|e| bad(e.to_string()))?;
    let mut out = header(s);
    for line in text.lines() {
        match placeholder_at(line) {
            Some((indent, i)) => {
                push_lines(&mut out, &allowlist_item(items.get(i).copied(), indent))
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Keeps `p` for later and returns the placeholder that stands for it.
fn hold<'a>(items: &mut Vec<&'a Pipeline>, p: Option<&'a Pipeline>) -> Option<String> {
    p.map(|p| {
        items.push(p);
        format!("{PLACEHOLDER}{}__", items.len() - 1)
    })
}

/// `    - __iron_agent_suggested_allowlist_3__` → (4, 3).
fn placeholder_at(line: &str) -> Option<(usize, usize)> {
    let t = line.trim_start();
    let rest = t.strip_prefix("- ")?.trim().trim_matches(['"', '\'']);
    let n = rest.strip_prefix(PLACEHOLDER)?.strip_suffix("__")?;
    Some((line.len() - t.len(), n.parse().ok()?))
}

/// Which scope a `--config` profile is: its number and the policy's name.
pub fn scope_of(cfg: &crate::config::Config, profile: usize) -> Scope {
    let policy = profile
        .checked_sub(1)
        .and_then(|i| cfg.intercept.policies.get(i))
        .map(|p| p.name.clone().unwrap_or_default());
    Scope {
        profile: Some(profile),
        policy,
    }
}

#[cfg(test)]
#[path = "suggest_yaml_tests.rs"]
mod tests;
