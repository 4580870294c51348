//! `allowlist`: default-deny on destination host/CIDR, method and path, per request. The same
//! compiled rules make the connection-level decision in [`crate::policy::Policy`].

use async_trait::async_trait;

use super::build::{Build, BuildContext, TransformBuildError};
use super::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};
use crate::config::transforms::AllowlistConfig;
use crate::policy::{ALLOWLIST, AllowRules};

pub struct Allowlist {
    rules: AllowRules,
}

impl Allowlist {
    pub fn new(cfg: &AllowlistConfig) -> Self {
        Self {
            rules: AllowRules::new(cfg),
        }
    }
}

impl Build for Allowlist {
    type Config = AllowlistConfig;

    fn build(cfg: &AllowlistConfig, _: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        Ok(Self::new(cfg))
    }
}

#[async_trait]
impl Transform for Allowlist {
    fn name(&self) -> &str {
        ALLOWLIST
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        let admission = self.rules.judge_request(&cx.match_input(req));
        if let Some((k, v)) = admission.annotation() {
            cx.annotate(k, v);
        }
        Ok(if admission.admits() {
            Verdict::Continue
        } else {
            Verdict::Reject(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use crate::identify::{ClientAddr, HostName};
    use crate::transform::{Mode, body};

    async fn run(a: &Allowlist, method: &str, host: &str, path: &str) -> (bool, RequestCx) {
        let client = ClientAddr("127.0.0.1:1".parse().unwrap());
        let mut cx = RequestCx::new(HostName::new(host), client, Mode::Mitm);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(body::empty())
            .unwrap();
        let v = a.on_request(&mut cx, &mut req).await.unwrap();
        (matches!(v, Verdict::Continue), cx)
    }

    #[tokio::test]
    async fn requests_are_judged_by_method_and_path() {
        let a = Allowlist::new(&AllowlistConfig {
            domains: vec!["open.test".into()],
            cidrs: vec![],
            rules: vec![RuleConfig {
                host: Some("api.test".into()),
                cidr: None,
                methods: vec!["GET".into()],
                paths: vec!["/v1/*".into()],
                source_ip: None,
            }],
            warn: false,
            mode: Default::default(),
        });
        assert!(run(&a, "POST", "open.test", "/x").await.0);
        assert!(run(&a, "GET", "api.test", "/v1/models").await.0);
        assert!(!run(&a, "POST", "api.test", "/v1/models").await.0);
        assert!(!run(&a, "GET", "api.test", "/v2").await.0);
        assert!(!run(&a, "GET", "other.test", "/").await.0);
    }

    #[tokio::test]
    async fn warn_mode_admits_and_annotates() {
        let a = Allowlist::new(&AllowlistConfig {
            warn: true,
            ..Default::default()
        });
        let (passed, mut cx) = run(&a, "GET", "x.test", "/").await;
        assert!(passed);
        assert_eq!(cx.take_annotations()["action"], "warn");
    }

    #[tokio::test]
    async fn learn_mode_admits_what_no_rule_matches_and_says_so() {
        let a = Allowlist::new(&AllowlistConfig {
            domains: vec!["open.test".into()],
            warn: true,
            mode: crate::config::transforms::AllowlistMode::Learn,
            ..Default::default()
        });
        let (passed, mut cx) = run(&a, "DELETE", "x.test", "/").await;
        assert!(passed);
        let notes = cx.take_annotations();
        assert_eq!(notes["learn"], "would_deny");
        assert!(!notes.contains_key("action"), "{notes:?}");
        // A matched request carries no learn annotation.
        let (passed, mut cx) = run(&a, "GET", "open.test", "/").await;
        assert!(passed && cx.take_annotations().is_empty());
    }
}
