//! `allowlist`: default-deny on destination host/CIDR, method and path.

use async_trait::async_trait;

use super::{ConnectionCheck, ProxyRequest, RequestCx, Transform, TransformError, Verdict};
use crate::config::transforms::AllowlistConfig;
use crate::policy::{MatchInput, Rule, RuleSet};

pub struct Allowlist {
    rules: RuleSet,
    warn: bool,
}

impl Allowlist {
    pub fn new(cfg: &AllowlistConfig) -> Self {
        let mut rules: Vec<Rule> = cfg.domains.iter().map(|d| Rule::host(d)).collect();
        rules.extend(cfg.cidrs.iter().map(|c| Rule::cidr(c.0)));
        rules.extend(cfg.rules.iter().map(Rule::from_config));
        Self {
            rules: RuleSet::new(rules),
            warn: cfg.warn,
        }
    }
}

#[async_trait]
impl Transform for Allowlist {
    fn name(&self) -> &str {
        "allowlist"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        if self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        if self.warn {
            cx.annotate("action", "warn");
            return Ok(Verdict::Continue);
        }
        Ok(Verdict::Reject(None))
    }

    fn admits_host(&self, host: &str) -> bool {
        let input = MatchInput {
            host,
            method: "",
            path: "",
            dest_ip: None,
        };
        self.warn || self.rules.matches_dest(&input)
    }

    fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        self.rules.cidr_contains(ip)
    }

    fn judge_connection(&self, cx: &mut RequestCx, check: &ConnectionCheck<'_>) -> Option<bool> {
        let input = MatchInput {
            host: check.host,
            method: "",
            path: "",
            dest_ip: check.dest_ip,
        };
        let matched = if check.requests_follow {
            self.rules.matches_dest(&input)
        } else {
            self.rules.matches(&input)
        };
        if !matched && self.warn {
            cx.annotate("action", "warn");
        }
        Some(matched || self.warn)
    }
}
