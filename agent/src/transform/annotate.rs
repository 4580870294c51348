//! `annotate`: copies request header values into audit annotations (`header:<Name>`). Never
//! rejects. By design it can log whatever the configured headers carry.

use async_trait::async_trait;

use crate::config::transforms::AnnotateConfig;
use crate::policy::RuleSet;
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::headers::canonical_name;
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};

pub struct Annotate {
    groups: Vec<(RuleSet, Vec<String>)>,
}

impl Annotate {
    pub fn new(cfg: &AnnotateConfig) -> Self {
        let groups = cfg
            .annotations
            .iter()
            .map(|g| (RuleSet::from_configs(&g.rules), g.headers.clone()))
            .collect();
        Self { groups }
    }
}

impl Build for Annotate {
    type Config = AnnotateConfig;

    fn build(cfg: &AnnotateConfig, _: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        Ok(Self::new(cfg))
    }
}

#[async_trait]
impl Transform for Annotate {
    fn name(&self) -> &str {
        "annotate"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        let mut found = Vec::new();
        for (rules, headers) in &self.groups {
            if !rules.matches(&cx.match_input(req)) {
                continue;
            }
            for h in headers {
                let value = req.headers().get(h.as_str()).and_then(|v| v.to_str().ok());
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    found.push((format!("header:{}", canonical_name(h)), v.to_string()));
                }
            }
        }
        for (k, v) in found {
            cx.annotate(k, v);
        }
        Ok(Verdict::Continue)
    }
}
