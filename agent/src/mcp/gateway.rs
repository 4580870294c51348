//! `mcp_gateway` (behaviour doc §15): a request that matched an MCP server and passed its
//! policy goes to the first route whose rules match: to the route's upstream URL (its path
//! replaces the client's; query = route query, then the request's), with the route's
//! credentials injected. The dial goes through the normal connector, deny CIDRs included.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Uri};

use super::McpBuildError;
use crate::audit::mcp::GatewayAudit;
use crate::config::McpGatewayConfig;
use crate::config::mcp_gateway::check_upstream;
use crate::message::body::ProxyRequest;
use crate::policy::{MatchInput, RuleSet};
use crate::secrets::{Secret, SecretRegistry};
use crate::template::Template;
use crate::transform::headers::canonical_name;

#[derive(Default)]
pub struct Gateway {
    routes: Vec<Route>,
}

pub struct Route {
    name: String,
    rules: RuleSet,
    /// As configured, for the audit.
    upstream_text: String,
    scheme: Scheme,
    authority: Authority,
    path: String,
    query: Option<String>,
    credentials: Vec<Credential>,
}

struct Credential {
    secret: Arc<Secret>,
    target: Inject,
    formatter: Option<Template>,
    require: bool,
}

enum Inject {
    /// Canonical name.
    Header(String),
    Query(String),
}

/// Where a routed request now goes (the caller re-points its target there).
pub struct Rerouted {
    pub scheme: Scheme,
    pub authority: Authority,
    pub audit: GatewayAudit,
}

/// Marks a request the gateway re-routed: its port is the route's, not the tunnel's.
#[derive(Debug, Clone, Copy)]
pub struct GatewayRouted;

impl Gateway {
    pub fn build(
        cfg: Option<&McpGatewayConfig>,
        secrets: &mut SecretRegistry,
    ) -> Result<Self, McpBuildError> {
        let mut routes = Vec::new();
        for (i, r) in cfg
            .map(|c| c.routes.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let rp = format!("mcp_gateway.routes[{i}]");
            let uri = check_upstream(&r.upstream).map_err(|why| McpBuildError::Invalid {
                path: format!("{rp}.upstream"),
                why,
            })?;
            let (scheme, authority) = match (uri.scheme(), uri.authority()) {
                (Some(s), Some(a)) => (s.clone(), a.clone()),
                _ => {
                    return Err(McpBuildError::Invalid {
                        path: format!("{rp}.upstream"),
                        why: "must be an absolute URL".into(),
                    });
                }
            };
            let mut credentials = Vec::new();
            for (j, c) in r.credentials.iter().enumerate() {
                credentials.push(credential(c, &format!("{rp}.credentials[{j}]"), secrets)?);
            }
            routes.push(Route {
                name: r.name.clone(),
                rules: RuleSet::from_configs(&r.rules),
                upstream_text: r.upstream.clone(),
                scheme,
                authority,
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                credentials,
            });
        }
        Ok(Self { routes })
    }

    pub fn route(&self, input: &MatchInput<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.rules.matches(input))
    }
}

fn credential(
    c: &crate::config::mcp_gateway::GatewayCredential,
    cp: &str,
    secrets: &mut SecretRegistry,
) -> Result<Credential, McpBuildError> {
    let invalid = |path: String, why: &str| McpBuildError::Invalid {
        path,
        why: why.into(),
    };
    let src = c
        .source
        .as_ref()
        .ok_or_else(|| invalid(format!("{cp}.source"), "is required"))?;
    let secret = secrets
        .register(src)
        .map_err(|source| McpBuildError::Secret {
            path: format!("{cp}.source"),
            source,
        })?;
    let inj = c
        .inject
        .as_ref()
        .ok_or_else(|| invalid(format!("{cp}.inject"), "is required"))?;
    let target = match (&inj.header, &inj.query_param) {
        (Some(h), None) => Inject::Header(canonical_name(h)),
        (None, Some(q)) => Inject::Query(q.clone()),
        _ => {
            return Err(invalid(
                format!("{cp}.inject"),
                "exactly one of header or query_param is required",
            ));
        }
    };
    let formatter = match &inj.formatter {
        Some(f) => {
            Some(
                Template::parse(f, &["Value"]).map_err(|source| McpBuildError::Template {
                    path: format!("{cp}.inject.formatter"),
                    source,
                })?,
            )
        }
        None => None,
    };
    Ok(Credential {
        secret,
        target,
        formatter,
        require: c.require,
    })
}

impl Route {
    /// Injects the credentials and points the request's path and query at the upstream.
    /// `Err` (a required credential unavailable, a value unusable) fails the request: 502.
    pub fn apply(&self, req: &mut ProxyRequest) -> Result<Rerouted, String> {
        let mut injected = Vec::new();
        let mut extra_query = Vec::new();
        for c in &self.credentials {
            let value = match c.secret.current() {
                Ok(v) => v,
                Err(_) if !c.require => continue,
                Err(e) => {
                    return Err(format!(
                        "gateway credential {:?} unavailable: {e}",
                        c.secret.display_name()
                    ));
                }
            };
            let rendered = match &c.formatter {
                Some(t) => t
                    .render(&|p: &[String]| {
                        (p.len() == 1 && p[0] == "Value").then(|| value.expose().to_string())
                    })
                    .map_err(|e| format!("gateway credential formatter: {e}"))?,
                None => value.expose().to_string(),
            };
            let name = c.secret.display_name();
            match &c.target {
                Inject::Header(h) => {
                    let hn = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("gateway header {h:?} is not a valid name"))?;
                    // The value itself is never part of the error.
                    let hv = HeaderValue::from_str(&rendered).map_err(|_| {
                        format!("gateway credential {name:?} is not a valid header value")
                    })?;
                    req.headers_mut().insert(hn, hv);
                    injected.push(format!("{name}:header:{h}"));
                }
                Inject::Query(q) => {
                    extra_query.push((q.clone(), rendered));
                    injected.push(format!("{name}:query:{q}"));
                }
            }
        }
        let pq = self.path_and_query(req.uri(), &extra_query)?;
        *req.uri_mut() = Uri::from_parts({
            let mut p = http::uri::Parts::default();
            p.path_and_query = Some(pq);
            p
        })
        .map_err(|e| format!("gateway upstream URL: {e}"))?;
        Ok(Rerouted {
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            audit: GatewayAudit {
                route: self.name.clone(),
                upstream: self.upstream_text.clone(),
                credentials_injected: injected,
            },
        })
    }

    /// The route's path; query = the route's, then the request's, with injected parameters
    /// set (replacing any of the same name).
    fn path_and_query(
        &self,
        original: &Uri,
        set: &[(String, String)],
    ) -> Result<PathAndQuery, String> {
        let mut query: Vec<&str> = [self.query.as_deref(), original.query()]
            .into_iter()
            .flatten()
            .filter(|q| !q.is_empty())
            .collect();
        let encoded;
        if !set.is_empty() {
            let joined = query.join("&");
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form_urlencoded::parse(joined.as_bytes()) {
                if !set.iter().any(|(n, _)| *n == k) {
                    ser.append_pair(&k, &v);
                }
            }
            for (k, v) in set {
                ser.append_pair(k, v);
            }
            encoded = ser.finish();
            query = vec![encoded.as_str()];
        }
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        let s = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        s.parse().map_err(|e| format!("gateway upstream URL: {e}"))
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
