//! Rules: host globs, CIDRs, methods and paths, compiled once from `rules`.
//!
//! Every transform that scopes itself with `rules`, and the connection-level [`super::Policy`],
//! use [`RuleSet`], so all of them agree on what "matches" means (behaviour doc §10, with our
//! decision 2: host names compare case-insensitively and ignore one trailing dot).

use std::net::IpAddr;

use ipnet::IpNet;

use super::hostmatch::{match_glob, match_path, normalize_host};
use crate::config::RuleConfig;

/// What a rule is matched against: the request's host (port stripped, normalised), method,
/// decoded path, and, in transparent mode, the original destination IP.
#[derive(Debug, Clone, Copy)]
pub struct MatchInput<'a> {
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The IP the client actually connected to, when known (eBPF redirect).
    pub dest_ip: Option<IpAddr>,
    /// The client's address; `None` where no client is in view (DNS answers), so that rules
    /// limited by `source_ip` are judged by destination only there.
    pub client_ip: Option<IpAddr>,
}

#[derive(Debug, Clone)]
enum Dest {
    Host(String),
    Cidr(IpNet),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    dest: Dest,
    /// Upper-cased; `None` = any method (omitted or exactly `["*"]`).
    methods: Option<Vec<String>>,
    /// `None` = any path.
    paths: Option<Vec<String>>,
    /// `None` = any client.
    source: Option<IpNet>,
}

impl Rule {
    pub fn host(pattern: &str) -> Self {
        Self {
            dest: Dest::Host(normalize_host(pattern)),
            methods: None,
            paths: None,
            source: None,
        }
    }

    pub fn cidr(net: IpNet) -> Self {
        Self {
            dest: Dest::Cidr(net),
            methods: None,
            paths: None,
            source: None,
        }
    }

    /// Compiles a validated [`RuleConfig`] (exactly one of host/cidr was checked at load).
    pub fn from_config(cfg: &RuleConfig) -> Self {
        let dest = match (&cfg.host, &cfg.cidr) {
            (_, Some(c)) => Dest::Cidr(c.0),
            (Some(h), None) => Dest::Host(normalize_host(h)),
            // Unreachable after validation; an empty host pattern matches nothing useful.
            (None, None) => Dest::Host(String::from("\u{0}")),
        };
        let methods = if cfg.methods.is_empty() || (cfg.methods.len() == 1 && cfg.methods[0] == "*")
        {
            None
        } else {
            Some(cfg.methods.iter().map(|m| m.to_ascii_uppercase()).collect())
        };
        let paths = if cfg.paths.is_empty() {
            None
        } else {
            Some(cfg.paths.clone())
        };
        Self {
            dest,
            methods,
            paths,
            source: cfg.source_ip.map(|s| s.0),
        }
    }

    /// Whether the destination part (host glob or CIDR) and the client (`source_ip`) match,
    /// ignoring method and path.
    pub fn matches_dest(&self, input: &MatchInput<'_>) -> bool {
        self.matches_source(input) && self.matches_dest_only(input)
    }

    /// A rule with `source_ip` matches only clients inside it; with no client in view (DNS),
    /// the destination decides alone.
    fn matches_source(&self, input: &MatchInput<'_>) -> bool {
        match (&self.source, input.client_ip) {
            (None, _) | (Some(_), None) => true,
            (Some(net), Some(ip)) => net.contains(&unmap(ip)),
        }
    }

    fn matches_dest_only(&self, input: &MatchInput<'_>) -> bool {
        match &self.dest {
            Dest::Host(p) => match_glob(p, input.host),
            Dest::Cidr(net) => {
                let literal = input
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
                    .map(unmap);
                literal.is_some_and(|ip| net.contains(&ip))
                    || input.dest_ip.map(unmap).is_some_and(|ip| net.contains(&ip))
            }
        }
    }

    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        self.matches_dest(input)
            && self
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m == input.method))
            && self
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| match_path(p, input.path)))
    }
}

/// An ordered list of rules; matches when any rule matches. An empty set matches nothing.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    pub fn from_configs(cfgs: &[RuleConfig]) -> Self {
        Self::new(cfgs.iter().map(Rule::from_config).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        self.first_match(input).is_some()
    }

    /// The index of the first rule that matches (`iron-agent policy test` names it).
    pub fn first_match(&self, input: &MatchInput<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(input))
    }

    /// Whether a CIDR rule contains `ip` (IPv4-mapped addresses unmapped).
    pub fn cidr_contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        self.rules
            .iter()
            .any(|r| matches!(&r.dest, Dest::Cidr(n) if n.contains(&ip)))
    }

    /// Host/CIDR-only match: used where only the destination is known (tunnel setup).
    pub fn matches_dest(&self, input: &MatchInput<'_>) -> bool {
        self.first_dest_match(input).is_some()
    }

    /// The index of the first rule whose destination matches.
    pub fn first_dest_match(&self, input: &MatchInput<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches_dest(input))
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(host: &'a str, method: &'a str, path: &'a str) -> MatchInput<'a> {
        MatchInput {
            host,
            method,
            path,
            dest_ip: None,
            client_ip: None,
        }
    }

    fn rule(host: &str, methods: &[&str], paths: &[&str]) -> Rule {
        Rule::from_config(&RuleConfig {
            host: Some(host.into()),
            cidr: None,
            methods: methods.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            source_ip: None,
        })
    }

    #[test]
    fn methods_and_paths() {
        let r = rule("api.openai.com", &["post"], &["/v1/*"]);
        assert!(r.matches(&input("api.openai.com", "POST", "/v1/chat")));
        assert!(r.matches(&input("api.openai.com", "POST", "/v1")));
        assert!(!r.matches(&input("api.openai.com", "GET", "/v1/chat")));
        assert!(!r.matches(&input("api.openai.com", "POST", "/v10")));
        let any = rule("x.com", &["*"], &[]);
        assert!(any.matches(&input("x.com", "DELETE", "/anything")));
    }

    #[test]
    fn cidr_matches_literal_and_dest_ip() {
        let r = Rule::cidr("10.0.0.0/8".parse().unwrap());
        assert!(r.matches(&input("10.1.2.3", "GET", "/")));
        assert!(!r.matches(&input("example.com", "GET", "/")));
        let via_dest = MatchInput {
            host: "example.com",
            method: "GET",
            path: "/",
            dest_ip: Some("::ffff:10.9.9.9".parse().unwrap()),
            client_ip: None,
        };
        assert!(r.matches(&via_dest));
        let v6 = Rule::cidr("::1/128".parse().unwrap());
        assert!(v6.matches(&input("[::1]", "GET", "/")));
    }

    #[test]
    fn empty_set_matches_nothing() {
        assert!(!RuleSet::default().matches(&input("a.com", "GET", "/")));
    }

    #[test]
    fn source_ip_limits_the_client() {
        let r = Rule::from_config(&RuleConfig {
            host: Some("a.test".into()),
            source_ip: Some("10.0.0.0/24".parse().unwrap()),
            ..Default::default()
        });
        let from = |ip: &str| MatchInput {
            client_ip: Some(ip.parse().unwrap()),
            ..input("a.test", "GET", "/")
        };
        assert!(r.matches(&from("10.0.0.7")));
        assert!(r.matches(&from("::ffff:10.0.0.7")));
        assert!(!r.matches(&from("10.0.1.7")));
        assert!(!r.matches_dest(&from("127.0.0.1")));
        // No client in view (DNS): the destination decides.
        assert!(r.matches(&input("a.test", "GET", "/")));
    }
}
