//! What a valid config asks for that this build cannot enforce. Running without it would
//! silently drop a policy the operator wrote, so each item refuses startup (fail closed);
//! `check-config` and `install` report the same list.

use std::sync::Arc;

use crate::config::Config;
use crate::mint::TokenHttp;
use crate::secrets::SecretRegistry;
use crate::transform::{self, BuildContext};
use crate::upstream::UpstreamProxies;

/// Everything in `cfg` this build cannot enforce, one message each (empty = runnable).
pub fn unsupported(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    // Built only to surface build errors: nothing mints, so no connector.
    let mint = Arc::new(TokenHttp::detached());
    let build = |entries| {
        let mut secrets = SecretRegistry::default();
        transform::build_pipeline(entries, &mut BuildContext::new(&mut secrets, &mint))
    };
    if let Err(errs) = build(&cfg.transforms) {
        out.extend(errs.iter().map(|e| e.to_string()));
    }
    for (i, p) in cfg.intercept.policies.iter().enumerate() {
        if let Err(errs) = build(&p.transforms) {
            out.extend(errs.iter().map(|e| format!("intercept.policies[{i}].{e}")));
        }
    }
    let mut secrets = SecretRegistry::default();
    if let Err(e) = crate::mcp::Mcp::build(cfg.mcp.as_ref(), cfg.mcp_gateway.as_ref(), &mut secrets)
    {
        out.push(e.to_string());
    }
    // Not unsupported, but checked here so that `check-config` and `install` report bad values.
    out.extend(UpstreamProxies::check(&cfg.proxy.upstream_proxy));
    out
}
