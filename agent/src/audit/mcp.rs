//! The audit record's `mcp` group (behaviour doc §14.5): the MCP server policy that matched,
//! one entry per JSON-RPC message seen in the request and in the response, and the gateway
//! route that carried it. Response entries are added while a streamed response passes, so the
//! message list is shared with the response filter and read when the record is written.

use std::sync::{Arc, Mutex, PoisonError};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// One JSON-RPC message and what the policy did with it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct McpMessage {
    /// `request` or `response`.
    pub direction: &'static str,
    /// `allow`, `deny` or `filtered`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// `tool_not_allowed`, `argument_constraint`, `oversize_body`, `malformed_jsonrpc`,
    /// `batch_denied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The call's arguments when their JSON is at most 64 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Longer arguments: the first 61 bytes of their JSON and `...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_arguments: Option<String>,
    /// Set instead of the arguments when a secret was swapped into the request body: the
    /// arguments may hold a credential value, which never goes into a record.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub arguments_redacted: bool,
    /// `tools/list` responses: how many tools were removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered: Option<usize>,
}

/// `mcp.gateway`: where the gateway sent the request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayAudit {
    pub route: String,
    pub upstream: String,
    /// `<source>:header:<Canonical-Name>` or `<source>:query:<param>`; never a value.
    pub credentials_injected: Vec<String>,
}

/// The list of message entries, shared with the response filter.
#[derive(Debug, Clone, Default)]
pub struct McpMessages(Arc<Mutex<Vec<McpMessage>>>);

impl McpMessages {
    pub fn push(&self, m: McpMessage) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(m);
    }

    pub fn snapshot(&self) -> Vec<McpMessage> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The `mcp` group; `messages` and `gateway` are omitted when empty.
#[derive(Debug, Clone, Default)]
pub struct McpAudit {
    pub server: String,
    pub messages: McpMessages,
    pub gateway: Option<GatewayAudit>,
}

impl Serialize for McpAudit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let messages = self.messages.snapshot();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("server", &self.server)?;
        if !messages.is_empty() {
            m.serialize_entry("messages", &messages)?;
        }
        if let Some(g) = &self.gateway {
            m.serialize_entry("gateway", g)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_groups_are_omitted_and_response_entries_added_later_appear() {
        let a = McpAudit {
            server: "gh".into(),
            ..McpAudit::default()
        };
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"server":"gh"}"#);
        let shared = a.messages.clone();
        shared.push(McpMessage {
            direction: "response",
            decision: "filtered",
            method: Some("tools/list".into()),
            filtered: Some(2),
            ..McpMessage::default()
        });
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"server":"gh","messages":[{"direction":"response","decision":"filtered","method":"tools/list","filtered":2}]}"#
        );
    }
}
