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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use crate::transform::Mode;

    fn judge(a: &Allowlist, host: &str, requests_follow: bool) -> (Option<bool>, RequestCx) {
        let mut cx = RequestCx::new(host.into(), "127.0.0.1:1".parse().unwrap(), Mode::Mitm);
        let check = ConnectionCheck {
            host,
            dest_ip: None,
            requests_follow,
        };
        (a.judge_connection(&mut cx, &check), cx)
    }

    #[test]
    fn connections_are_judged_by_destination() {
        let a = Allowlist::new(&AllowlistConfig {
            domains: vec!["open.test".into()],
            cidrs: vec![],
            rules: vec![RuleConfig {
                host: Some("api.test".into()),
                cidr: None,
                methods: vec!["GET".into()],
                paths: vec!["/v1/*".into()],
            }],
            warn: false,
        });
        assert_eq!(judge(&a, "open.test", false).0, Some(true));
        assert_eq!(judge(&a, "other.test", true).0, Some(false));
        // Tunnel setup: the restricted rule admits, its requests are judged later.
        assert_eq!(judge(&a, "api.test", true).0, Some(true));
        // sni-only: no request will ever show a method, so the rule cannot match.
        assert_eq!(judge(&a, "api.test", false).0, Some(false));
    }

    #[test]
    fn warn_mode_admits_and_annotates() {
        let a = Allowlist::new(&AllowlistConfig {
            domains: vec![],
            cidrs: vec![],
            rules: vec![],
            warn: true,
        });
        let (verdict, mut cx) = judge(&a, "x.test", false);
        assert_eq!(verdict, Some(true));
        assert_eq!(cx.take_annotations()["action"], "warn");
    }
}
