//! The audit record schema: iron-proxy's flat JSON shape (`msg: "request"`), plus our fields.

use serde::Serialize;
use serde_json::{Map, Value};

/// Final outcome of a request, as iron-proxy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Allow,
    Reject,
    Stub,
    Error,
    ClientCancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Reject => "reject",
            Action::Stub => "stub",
            Action::Error => "error",
            Action::ClientCancel => "client_cancel",
        }
    }
}

/// What one transform did in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceAction {
    Allow,
    Reject,
    Stub,
    Error,
}

impl TraceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceAction::Allow => "allow",
            TraceAction::Reject => "reject",
            TraceAction::Stub => "stub",
            TraceAction::Error => "error",
        }
    }
}

/// One transform's entry in `request_transforms` / `response_transforms`.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub name: String,
    pub action: TraceAction,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

/// `body_capture` group (filled by the body_capture transform).
#[derive(Debug, Clone, Serialize)]
pub struct BodyCapture {
    pub request_body: String,
    pub request_body_truncated: bool,
}

/// `tunnel` group on requests that arrived inside a CONNECT or SOCKS5 tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelAudit {
    /// `host:port` the client asked the tunnel for.
    pub target: String,
    /// `connect` or `socks5`.
    pub protocol: &'static str,
    /// The tunnel setup's traces (its own record has them too).
    pub request_transforms: Vec<Trace>,
}

/// `postgres` group on records of the PostgreSQL proxy: one per session (`event: "session"`)
/// and one per refused statement (`event: "statement"`). Never the DSN or a password.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PostgresAudit {
    pub event: &'static str,
    /// The database the client asked for (the route).
    pub database: String,
    /// The user the client logged in as (the proxy credential's user).
    pub user: String,
    /// `host:port` of the upstream(s) the route's DSN names.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// SQLSTATE sent to the client, for refusals and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// The refused statement with its literals replaced by `$n`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Session totals (session records only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_from_client: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_to_client: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements_refused: Option<u64>,
}

/// One audit line. Field names and presence follow iron-proxy's documented shape; optional
/// groups are omitted when empty. Never put a credential value in here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    pub host: String,
    pub method: String,
    pub path: String,
    pub action: Action,
    pub status_code: u16,
    pub duration_ms: f64,
    pub request_transforms: Vec<Trace>,
    pub response_transforms: Vec<Trace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stubbed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the agent itself refused the request before the pipeline (e.g. `sni_host_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Peer address of the client connection (iron-proxy's name).
    pub remote_addr: String,
    pub sni: String,
    pub mode: &'static str,
    pub protocol: &'static str,
    /// MCP interception (`mcp:` block): the server policy and one entry per message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<super::mcp::McpAudit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_capture: Option<BodyCapture>,
    /// Identity of the workload, for connections that arrived through the eBPF redirect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The address the workload connected to before the redirect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orig_dst: Option<String>,
    /// The `intercept.policies` entry whose pipeline ran (absent = the top-level pipeline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelAudit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresAudit>,
    /// The proxy's tags (managed mode: from the control plane), set by the sink on every record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// A proxy's tags, shared by every record (one reference count per record, no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags(pub std::sync::Arc<Vec<String>>);

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl AuditRecord {
    /// Log level iron-proxy assigns: ERROR with an error, WARN on reject, INFO otherwise.
    pub fn level(&self) -> crate::config::LogLevel {
        use crate::config::LogLevel;
        match self.action {
            Action::Error => LogLevel::Error,
            Action::Reject => LogLevel::Warn,
            _ if self.error.is_some() => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}
