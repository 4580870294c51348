//! `allowlist`: default-deny on destination host/CIDR, method and path, per request. The same
//! compiled rules make the connection-level decision in [`crate::policy::Policy`].

use async_trait::async_trait;

use super::build::{Build, BuildContext, TransformBuildError};
use super::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};
use crate::config::transforms::AllowlistConfig;
use crate::policy::{ALLOWLIST, Admission, AllowRules};

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
        match self.rules.judge_request(&cx.match_input(req)) {
            Admission::Allowed => Ok(Verdict::Continue),
            Admission::Warned => {
                cx.annotate("action", "warn");
                Ok(Verdict::Continue)
            }
            Admission::Denied => Ok(Verdict::Reject(None)),
        }
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
            }],
            warn: false,
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
}
