//! Top-level `mcp_gateway:` block (behaviour doc §15): requests that matched an MCP server and
//! passed its policy are re-routed to a configured upstream, with credentials injected.

use std::collections::HashSet;

use serde::Deserialize;

use super::ConfigError;
use super::transforms::source::validate_required;
use super::transforms::{RuleConfig, SecretSource, template, validate_required_rules};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpGatewayConfig {
    pub routes: Vec<GatewayRoute>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayRoute {
    pub name: String,
    pub rules: Vec<RuleConfig>,
    /// `http(s)://host[:port]/path[?query]`; the path replaces the client's.
    pub upstream: String,
    pub credentials: Vec<GatewayCredential>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayCredential {
    pub source: Option<SecretSource>,
    pub inject: Option<GatewayInject>,
    /// Default true: a credential that cannot be read fails the request (502).
    pub require: bool,
}

impl Default for GatewayCredential {
    fn default() -> Self {
        Self {
            source: None,
            inject: None,
            require: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayInject {
    pub header: Option<String>,
    pub query_param: Option<String>,
    /// Go template with `.Value` and `base64`.
    pub formatter: Option<String>,
}

impl McpGatewayConfig {
    /// `path` is `mcp_gateway`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let rp = format!("{path}.routes[{i}]");
            if r.name.trim().is_empty() {
                errors.push(ConfigError::new(format!("{rp}.name"), "is required"));
            } else if !names.insert(r.name.as_str()) {
                errors.push(ConfigError::new(
                    format!("{rp}.name"),
                    format!("duplicate route name {:?}", r.name),
                ));
            }
            validate_required_rules(&r.rules, &format!("{rp}.rules"), errors);
            if let Err(why) = check_upstream(&r.upstream) {
                errors.push(ConfigError::new(format!("{rp}.upstream"), why));
            }
            for (j, c) in r.credentials.iter().enumerate() {
                c.validate(&format!("{rp}.credentials[{j}]"), errors);
            }
        }
    }
}

impl GatewayCredential {
    fn validate(&self, cp: &str, errors: &mut Vec<ConfigError>) {
        validate_required(self.source.as_ref(), &format!("{cp}.source"), errors);
        let Some(inj) = &self.inject else {
            errors.push(ConfigError::new(format!("{cp}.inject"), "is required"));
            return;
        };
        match (&inj.header, &inj.query_param) {
            (Some(h), None) if h.trim().is_empty() => {
                errors.push(ConfigError::new(format!("{cp}.inject.header"), "is empty"));
            }
            (Some(h), None) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
                errors.push(ConfigError::new(
                    format!("{cp}.inject.header"),
                    format!("{h:?} is not a valid header name"),
                ));
            }
            (None, Some(q)) if q.trim().is_empty() => {
                errors.push(ConfigError::new(
                    format!("{cp}.inject.query_param"),
                    "is empty",
                ));
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => errors.push(ConfigError::new(
                format!("{cp}.inject"),
                "exactly one of header or query_param is required",
            )),
        }
        if let Some(f) = &inj.formatter
            && let Err(e) = template::check(f, &["Value"])
        {
            errors.push(ConfigError::new(
                format!("{cp}.inject.formatter"),
                format!("parsing formatter template: {e}"),
            ));
        }
    }
}

/// The route's upstream must be an absolute http(s) URL with a host and no fragment.
pub fn check_upstream(s: &str) -> Result<http::Uri, String> {
    if s.trim().is_empty() {
        return Err("is required".into());
    }
    if s.contains('#') {
        return Err(format!("{s:?} must not have a fragment"));
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{s:?} must be an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(uri)
}
