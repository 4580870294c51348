//! Where each transform entry and each allowlist rule is in the YAML text, so a decision can
//! name `file:line`. A second, lenient pass over the text the config was loaded from: it reads
//! only positions, never values, and a text it cannot read just leaves the lines out.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use crate::policy::RuleRef;

/// Lines of one `transforms` entry and of its allowlist rules (1-based; 0 = unknown).
#[derive(Debug, Clone, Default)]
pub struct EntryLines {
    pub line: u64,
    pub domains: Vec<u64>,
    pub cidrs: Vec<u64>,
    pub rules: Vec<u64>,
}

impl EntryLines {
    pub fn rule(&self, r: RuleRef) -> u64 {
        let (list, i) = match r {
            RuleRef::Domain(i) => (&self.domains, i),
            RuleRef::Cidr(i) => (&self.cidrs, i),
            RuleRef::Rule(i) => (&self.rules, i),
        };
        list.get(i).copied().unwrap_or(self.line)
    }
}

/// Lines of the top-level `transforms` and of each `intercept.policies` entry.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    pub top: Vec<EntryLines>,
    /// Per policy: its own line and its entries.
    pub policies: Vec<(u64, Vec<EntryLines>)>,
}

impl Lines {
    pub fn of(text: &str) -> Self {
        let Ok(doc) = serde_saphyr::from_str::<Option<Doc>>(text) else {
            return Self::default();
        };
        let doc = doc.unwrap_or_default();
        Self {
            top: entries(&doc.transforms),
            policies: doc
                .intercept
                .unwrap_or_default()
                .policies
                .iter()
                .map(|p| (line(p), entries(&p.value.transforms)))
                .collect(),
        }
    }

    /// The entries of profile `profile` (0: top level, i + 1: `intercept.policies[i]`).
    pub fn profile(&self, profile: usize) -> &[EntryLines] {
        match profile.checked_sub(1) {
            None => &self.top,
            Some(i) => self.policies.get(i).map_or(&[], |p| &p.1),
        }
    }
}

fn line<T>(s: &Spanned<T>) -> u64 {
    s.referenced.line()
}

fn entries(list: &[Spanned<Entry>]) -> Vec<EntryLines> {
    list.iter()
        .map(|e| {
            let c = e.value.config.as_ref().map(|c| &c.value);
            let lines = |f: fn(&Rules) -> &Vec<Spanned<IgnoredAny>>| {
                c.map(|c| f(c).iter().map(line).collect())
                    .unwrap_or_default()
            };
            EntryLines {
                line: line(e),
                domains: lines(|c| &c.domains),
                cidrs: lines(|c| &c.cidrs),
                rules: lines(|c| &c.rules),
            }
        })
        .collect()
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Doc {
    transforms: Vec<Spanned<Entry>>,
    intercept: Option<Intercept>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Intercept {
    policies: Vec<Spanned<PolicyEntry>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PolicyEntry {
    transforms: Vec<Spanned<Entry>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Entry {
    config: Option<Spanned<Rules>>,
}

/// The allowlist's rule lists; other kinds' configs simply have none of them.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Rules {
    domains: Vec<Spanned<IgnoredAny>>,
    cidrs: Vec<Spanned<IgnoredAny>>,
    rules: Vec<Spanned<IgnoredAny>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_entries_and_rules() {
        let text = "\
dns: {proxy_ip: 127.0.0.1}
transforms:
  - name: allowlist
    config:
      domains:
        - a.test
        - \"*.b.test\"
      rules:
        - host: c.test
          methods: [GET]
  - name: secrets
    config:
      secrets: []
intercept:
  policies:
    - name: ci
      users: [ci]
      transforms:
        - name: allowlist
          config: {domains: [d.test], cidrs: [10.0.0.0/8]}
";
        let l = Lines::of(text);
        assert_eq!(l.top.len(), 2);
        assert_eq!(l.top[0].line, 3);
        assert_eq!(l.top[0].domains, [6, 7]);
        assert_eq!(l.top[0].rule(RuleRef::Rule(0)), 9);
        assert_eq!(l.top[1].line, 11);
        assert_eq!(l.policies[0].0, 16);
        let p = l.profile(1);
        assert_eq!(p[0].line, 19);
        assert_eq!(p[0].rule(RuleRef::Cidr(0)), 20);
        // An unknown index falls back to the entry's line.
        assert_eq!(p[0].rule(RuleRef::Domain(5)), 19);
        assert!(Lines::of(": not yaml [").top.is_empty());
    }
}
