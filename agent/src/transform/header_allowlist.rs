//! `header_allowlist`: default-deny on request headers. Headers not matching a literal name or a
//! `/regex/` entry are removed; their names are annotated as `stripped_headers`.

use async_trait::async_trait;
use regex::Regex;

use crate::config::transforms::HeaderAllowlistConfig;
use crate::policy::RuleSet;
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::headers::canonical_name;
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};

pub struct HeaderAllowlist {
    literals: Vec<String>,
    patterns: Vec<Regex>,
    /// Empty = every request (iron-proxy compatible).
    rules: RuleSet,
}

impl HeaderAllowlist {
    /// Regexes were validated at config load; an entry that still fails to compile is skipped.
    pub fn new(cfg: &HeaderAllowlistConfig) -> Self {
        let mut literals = Vec::new();
        let mut patterns = Vec::new();
        for h in &cfg.headers {
            match h.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                Some(re) if h.len() >= 2 => {
                    if let Ok(r) = Regex::new(&format!("(?i){re}")) {
                        patterns.push(r);
                    }
                }
                _ => literals.push(h.to_ascii_lowercase()),
            }
        }
        Self {
            literals,
            patterns,
            rules: RuleSet::from_configs(&cfg.rules),
        }
    }

    fn allowed(&self, lower_name: &str) -> bool {
        lower_name == "host"
            || self.literals.iter().any(|l| l == lower_name)
            || self
                .patterns
                .iter()
                .any(|p| p.is_match(&canonical_name(lower_name)))
    }
}

impl Build for HeaderAllowlist {
    type Config = HeaderAllowlistConfig;

    fn build(
        cfg: &HeaderAllowlistConfig,
        _: &mut BuildContext<'_>,
    ) -> Result<Self, TransformBuildError> {
        Ok(Self::new(cfg))
    }
}

#[async_trait]
impl Transform for HeaderAllowlist {
    fn name(&self) -> &str {
        "header_allowlist"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        if !self.rules.is_empty() && !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        let strip: Vec<http::HeaderName> = req
            .headers()
            .keys()
            .filter(|k| !self.allowed(k.as_str()))
            .cloned()
            .collect();
        if strip.is_empty() {
            return Ok(Verdict::Continue);
        }
        let mut names = Vec::with_capacity(strip.len());
        for k in strip {
            names.push(canonical_name(k.as_str()));
            req.headers_mut().remove(&k);
        }
        names.sort();
        cx.annotate("stripped_headers", names);
        Ok(Verdict::Continue)
    }
}
