//! One `allowlist` entry compiled: its rules and its warn or learn mode. Shared by the connection-level
//! [`super::Policy`] and the request-level `allowlist` transform, so both judge alike.

use std::net::IpAddr;

use super::rules::{MatchInput, Rule, RuleSet};
use crate::config::transforms::AllowlistConfig;

/// The name in traces and `rejected_by`, as in iron-proxy.
pub const ALLOWLIST: &str = "allowlist";

#[derive(Debug, Clone)]
pub struct AllowRules {
    rules: RuleSet,
    warn: bool,
    /// `mode: learn`: admit what no rule matches, and say so.
    learn: bool,
    /// How many `domains` and `cidrs` precede `rules` in [`Self::rules`], to name a match.
    domains: usize,
    cidrs: usize,
}

/// Which entry of an `allowlist` config matched: `domains[i]`, `cidrs[i]` or `rules[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    Domain(usize),
    Cidr(usize),
    Rule(usize),
}

impl RuleRef {
    /// The field path inside the allowlist's `config` (`domains[2]`).
    pub fn field(self) -> String {
        match self {
            RuleRef::Domain(i) => format!("domains[{i}]"),
            RuleRef::Cidr(i) => format!("cidrs[{i}]"),
            RuleRef::Rule(i) => format!("rules[{i}]"),
        }
    }
}

/// What one allowlist says about a request or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A rule matched.
    Allowed,
    /// No rule matched, but `warn: true` lets it through (annotated `action: warn`).
    Warned,
    /// No rule matched, but `mode: learn` lets it through (annotated `learn: would_deny`).
    Learned,
    Denied,
}

impl Admission {
    pub fn admits(self) -> bool {
        self != Admission::Denied
    }

    /// The annotation an admitted-but-unmatched request carries in its allowlist trace.
    pub fn annotation(self) -> Option<(&'static str, &'static str)> {
        match self {
            Admission::Warned => Some(("action", "warn")),
            Admission::Learned => Some((LEARN_KEY, WOULD_DENY)),
            Admission::Allowed | Admission::Denied => None,
        }
    }
}

/// The trace annotation of learn mode: `{"learn": "would_deny"}`.
pub const LEARN_KEY: &str = "learn";
pub const WOULD_DENY: &str = "would_deny";

impl AllowRules {
    pub fn new(cfg: &AllowlistConfig) -> Self {
        let mut rules: Vec<Rule> = cfg.domains.iter().map(|d| Rule::host(d)).collect();
        rules.extend(cfg.cidrs.iter().map(|c| Rule::cidr(c.0)));
        rules.extend(cfg.rules.iter().map(Rule::from_config));
        Self {
            rules: RuleSet::new(rules),
            warn: cfg.warn,
            learn: cfg.learns(),
            domains: cfg.domains.len(),
            cidrs: cfg.cidrs.len(),
        }
    }

    /// As [`Self::judge_request`] (`requests_follow: None`) or [`Self::judge_connection`],
    /// also naming the entry that matched. For `iron-agent policy test` and `replay`: the same
    /// rules, the same order, so the explanation cannot disagree with the decision.
    pub fn explain(
        &self,
        input: &MatchInput<'_>,
        requests_follow: Option<bool>,
    ) -> (Admission, Option<RuleRef>) {
        let hit = match requests_follow {
            Some(true) => self.rules.first_dest_match(input),
            None | Some(false) => self.rules.first_match(input),
        };
        let which = hit.map(|i| {
            if i < self.domains {
                RuleRef::Domain(i)
            } else if i < self.domains + self.cidrs {
                RuleRef::Cidr(i - self.domains)
            } else {
                RuleRef::Rule(i - self.domains - self.cidrs)
            }
        });
        (self.admission(hit.is_some()), which)
    }

    /// A request, with its method and path.
    pub fn judge_request(&self, input: &MatchInput<'_>) -> Admission {
        self.explain(input, None).0
    }

    /// A connection before any request is visible. With `requests_follow` (a tunnel: each inner
    /// request is judged again), rules restricted by method or path count by destination only
    /// (decision 9); without (sni-only), such rules cannot match, as in iron-proxy.
    pub fn judge_connection(&self, input: &MatchInput<'_>, requests_follow: bool) -> Admission {
        self.explain(input, Some(requests_follow)).0
    }

    /// Could a request to `host` pass (method and path unknown)?
    pub fn may_admit_host(&self, host: &str) -> bool {
        let input = MatchInput {
            host,
            method: "",
            path: "",
            dest_ip: None,
            client_ip: None,
        };
        self.warn || self.learn || self.rules.matches_dest(&input)
    }

    /// Does a CIDR rule allow destination `ip` explicitly?
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.rules.cidr_contains(ip)
    }

    fn admission(&self, matched: bool) -> Admission {
        match (matched, self.learn, self.warn) {
            (true, ..) => Admission::Allowed,
            (false, true, _) => Admission::Learned,
            (false, false, true) => Admission::Warned,
            (false, false, false) => Admission::Denied,
        }
    }
}
