//! Judging a request body (behaviour doc §14.2): every JSON-RPC message in it, one audit entry
//! each; any denied message denies the whole body, answered with one error envelope per message.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::Server;
use crate::audit::mcp::McpMessage;

/// What the error envelope says (`mcp.error`).
#[derive(Debug, Clone)]
pub struct ErrorTemplate {
    pub code: i64,
    pub message: String,
}

/// The verdict on one request body.
pub struct Judged {
    /// The JSON-RPC answer when denied (nothing goes upstream).
    pub deny: Option<Bytes>,
    /// Ids of the `tools/list` requests, whose responses are filtered.
    pub list_ids: Vec<Value>,
    pub entries: Vec<McpMessage>,
}

/// Why a message is denied (audit `reason`).
#[derive(Clone, Copy)]
pub enum Reason {
    ToolNotAllowed,
    ArgumentConstraint,
    OversizeBody,
    Malformed,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::ToolNotAllowed => "tool_not_allowed",
            Reason::ArgumentConstraint => "argument_constraint",
            Reason::OversizeBody => "oversize_body",
            Reason::Malformed => "malformed_jsonrpc",
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i64,
    message: &'a str,
}

impl ErrorTemplate {
    fn envelope<'a>(&'a self, id: &'a Value) -> Envelope<'a> {
        Envelope {
            jsonrpc: "2.0",
            id,
            error: ErrorBody {
                code: self.code,
                message: &self.message,
            },
        }
    }

    fn body<T: Serialize>(v: &T) -> Bytes {
        // Serialising these plain structs cannot fail; an empty body would still be a denial.
        Bytes::from(serde_json::to_vec(v).unwrap_or_default())
    }

    /// A denial of the whole body with id `null` (one-element array for batch-shaped input).
    pub fn deny_unreadable(&self, reason: Reason, batch: bool) -> Judged {
        let env = self.envelope(&Value::Null);
        let deny = if batch {
            Self::body(&[env])
        } else {
            Self::body(&env)
        };
        Judged {
            deny: Some(deny),
            list_ids: Vec::new(),
            entries: vec![McpMessage {
                direction: "request",
                decision: "deny",
                reason: Some(reason.as_str()),
                ..McpMessage::default()
            }],
        }
    }
}

/// Judges a JSON body sent to `server`. `redact`: leave argument values out of the audit.
pub fn judge(server: &Server, tpl: &ErrorTemplate, body: &[u8], redact: bool) -> Judged {
    let batch_shaped = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let (messages, batch) = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(a)) if !a.is_empty() => (a, true),
        Ok(v @ Value::Object(_)) => (vec![v], false),
        _ => return tpl.deny_unreadable(Reason::Malformed, batch_shaped),
    };
    let mut list_ids = Vec::new();
    let mut entries = Vec::with_capacity(messages.len());
    let mut denied = false;
    for msg in &messages {
        let (entry, is_list) = judge_message(server, msg, redact);
        denied |= entry.decision == "deny";
        if is_list && let Some(id) = msg.get("id") {
            list_ids.push(id.clone());
        }
        entries.push(entry);
    }
    if !denied {
        return Judged {
            deny: None,
            list_ids,
            entries,
        };
    }
    // One error per message, allowed ones included: nothing of the batch goes upstream.
    for e in entries.iter_mut().filter(|e| e.decision == "allow") {
        e.decision = "deny";
        e.reason = Some("batch_denied");
    }
    let envs: Vec<Envelope<'_>> = messages
        .iter()
        .map(|m| tpl.envelope(m.get("id").unwrap_or(&Value::Null)))
        .collect();
    let deny = if batch {
        ErrorTemplate::body(&envs)
    } else {
        ErrorTemplate::body(&envs[0])
    };
    Judged {
        deny: Some(deny),
        list_ids: Vec::new(),
        entries,
    }
}

/// One message's audit entry, and whether it is a `tools/list` request.
fn judge_message(server: &Server, msg: &Value, redact: bool) -> (McpMessage, bool) {
    let method = msg.get("method").and_then(Value::as_str);
    let mut entry = McpMessage {
        direction: "request",
        decision: "allow",
        method: method.map(str::to_string),
        ..McpMessage::default()
    };
    if !msg.is_object() {
        entry.decision = "deny";
        entry.reason = Some(Reason::Malformed.as_str());
        return (entry, false);
    }
    match method {
        Some("tools/call") => {
            let params = msg.get("params");
            let args = params.and_then(|p| p.get("arguments"));
            record_arguments(&mut entry, args, redact);
            let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
            entry.tool = name.map(str::to_string);
            let verdict = match name {
                None => Err(Reason::Malformed),
                Some(n) => server.check_call(n, args),
            };
            if let Err(r) = verdict {
                entry.decision = "deny";
                entry.reason = Some(r.as_str());
            }
            (entry, false)
        }
        Some("tools/list") => (entry, true),
        _ => (entry, false),
    }
}

/// `arguments` when their JSON is at most 64 bytes, else `raw_arguments` (61 bytes + `...`).
fn record_arguments(entry: &mut McpMessage, args: Option<&Value>, redact: bool) {
    let Some(args) = args else { return };
    if redact {
        entry.arguments_redacted = true;
        return;
    }
    let raw = args.to_string();
    if raw.len() <= 64 {
        entry.arguments = Some(args.clone());
    } else {
        let mut cut = 61;
        while !raw.is_char_boundary(cut) {
            cut -= 1;
        }
        entry.raw_arguments = Some(format!("{}...", &raw[..cut]));
    }
}
