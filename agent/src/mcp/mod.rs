//! MCP interception (top-level `mcp:`, behaviour doc §14) and the MCP gateway (`mcp_gateway:`,
//! §15). Runs after the request transforms, on requests to a Streamable HTTP MCP server that a
//! `servers[]` entry's rules match: `tools/call` is allowed only for listed tools whose `when`
//! clauses hold, anything else is answered with the JSON-RPC error envelope and never sent
//! upstream; `tools/list` answers are filtered on the way back ([`filter`]); allowed requests
//! may then be re-routed by a gateway route ([`gateway`]).

pub mod filter;
pub mod gateway;
mod matcher;
pub mod request;

use std::collections::HashMap;
use std::sync::Arc;

use http::header;
use serde_json::Value;

use crate::audit::mcp::McpMessages;
use crate::config::{McpConfig, McpGatewayConfig};
use crate::message::body::{self, ProxyRequest, ProxyResponse};
use crate::policy::{MatchInput, RuleSet};
use crate::secrets::{SecretError, SecretRegistry};
use crate::template::TemplateError;
use crate::transform::TransformError;
use crate::transform::body::buffer_request;
use filter::ResponseFilter;
use gateway::Gateway;
use matcher::Matcher;
use request::{ErrorTemplate, Reason};

/// Why the `mcp` or `mcp_gateway` block cannot be built; each names the field.
#[derive(Debug, thiserror::Error)]
pub enum McpBuildError {
    #[error("{path}: invalid matches regex: {source}")]
    Regex { path: String, source: regex::Error },
    #[error("{path}: {source}")]
    Secret { path: String, source: SecretError },
    #[error("{path}: parsing formatter template: {source}")]
    Template { path: String, source: TemplateError },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

/// The compiled `mcp` and `mcp_gateway` blocks.
pub struct Mcp {
    error: ErrorTemplate,
    servers: Vec<Arc<Server>>,
    pub gateway: Gateway,
}

/// One `mcp.servers[]` entry.
pub struct Server {
    name: String,
    rules: RuleSet,
    /// Allowed tools and their `when` clauses (all must hold).
    tools: HashMap<String, Vec<Matcher>>,
}

impl Server {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    fn check_call(&self, name: &str, args: Option<&Value>) -> Result<(), Reason> {
        let when = self.tools.get(name).ok_or(Reason::ToolNotAllowed)?;
        if when.iter().all(|m| m.holds(args)) {
            Ok(())
        } else {
            Err(Reason::ArgumentConstraint)
        }
    }
}

/// What MCP policy decided for a request.
pub enum Judgement {
    /// Send it on; the response goes through the filter when there is one.
    Forward(Option<ResponseFilter>),
    /// Answer with this JSON-RPC error; nothing goes upstream.
    Deny(ProxyResponse),
    /// The request body could not be read.
    Failed(TransformError),
}

impl Mcp {
    /// `None` when there is nothing to enforce (no `mcp` servers: the policy is disabled, and
    /// the gateway only ever applies to requests that matched a server).
    pub fn build(
        mcp: Option<&McpConfig>,
        gw: Option<&McpGatewayConfig>,
        secrets: &mut SecretRegistry,
    ) -> Result<Option<Self>, McpBuildError> {
        let Some(cfg) = mcp.filter(|m| !m.servers.is_empty()) else {
            if gw.is_some_and(|g| !g.routes.is_empty()) {
                tracing::warn!("mcp_gateway has routes but mcp has no servers: no route applies");
            }
            return Ok(None);
        };
        let mut servers = Vec::new();
        for (i, s) in cfg.servers.iter().enumerate() {
            let mut tools = HashMap::new();
            for (j, t) in s.tools.iter().enumerate() {
                let mut when = Vec::new();
                for (k, w) in t.when.iter().enumerate() {
                    when.push(Matcher::compile(w).map_err(|source| McpBuildError::Regex {
                        path: format!("mcp.servers[{i}].tools[{j}].when[{k}].matches"),
                        source,
                    })?);
                }
                tools.insert(t.name.clone(), when);
            }
            servers.push(Arc::new(Server {
                name: s.name.clone(),
                rules: RuleSet::from_configs(&s.rules),
                tools,
            }));
        }
        Ok(Some(Self {
            error: ErrorTemplate {
                code: cfg.error.code,
                message: cfg.error.message.clone(),
            },
            servers,
            gateway: Gateway::build(gw, secrets)?,
        }))
    }

    /// The configured servers in order (the fuzz targets judge bodies without a request).
    #[doc(hidden)]
    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// The first server whose rules match the request.
    pub fn server_for(&self, input: &MatchInput<'_>) -> Option<&Arc<Server>> {
        self.servers.iter().find(|s| s.rules.matches(input))
    }

    /// Judges a request to `server`. Only `POST` with an `application/json` body is read;
    /// anything else passes untouched (a GET opening an SSE stream, a DELETE ending a session).
    pub async fn judge(
        &self,
        server: &Arc<Server>,
        req: &mut ProxyRequest,
        limit: Option<u64>,
        messages: &McpMessages,
        redact: bool,
    ) -> Judgement {
        if req.method() != http::Method::POST || !is_media(req.headers(), "application/json") {
            return Judgement::Forward(None);
        }
        let judged = match buffer_request(req, limit).await {
            Ok(bytes) => request::judge(server, &self.error, &bytes, redact),
            // Never forwarded truncated: denied, as iron-proxy denies a cut-off body.
            Err(TransformError::BodyTooLarge { .. }) => {
                self.error.deny_unreadable(Reason::OversizeBody, false)
            }
            Err(e) => return Judgement::Failed(e),
        };
        for e in judged.entries {
            messages.push(e);
        }
        match judged.deny {
            Some(b) => Judgement::Deny(body::respond(http::StatusCode::OK, "application/json", b)),
            None => Judgement::Forward(Some(ResponseFilter::new(
                server.clone(),
                judged.list_ids,
                messages.clone(),
            ))),
        }
    }
}

/// Whether the `Content-Type` media type is `media` (case-insensitive, parameters ignored).
pub fn is_media(headers: &http::HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

#[cfg(test)]
mod tests;
