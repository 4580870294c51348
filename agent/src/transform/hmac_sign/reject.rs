//! Refusals: the documented reason, its status, iron-proxy's JSON body, and the contextual
//! annotations (`credential`, `header`, `error`, lengths) — never a credential value.

use http::StatusCode;
use serde_json::Value;

use crate::transform::{ProxyResponse, RequestCx, Verdict, body};

pub(crate) struct Reject {
    status: StatusCode,
    reason: &'static str,
    context: Vec<(&'static str, Value)>,
}

impl Reject {
    pub fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            context: Vec::new(),
        }
    }

    /// Adds a contextual annotation.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.context.push((key, value.into()));
        self
    }

    /// Annotates the trace (`rejected` plus context) and answers with the JSON body.
    pub fn into_verdict(self, cx: &mut RequestCx) -> Verdict {
        for (k, v) in self.context {
            cx.annotate(k, v);
        }
        cx.annotate("rejected", self.reason);
        Verdict::Reject(Some(response(self.status, self.reason)))
    }
}

/// iron-proxy's reject body: `{"error":"hmac_sign","reason":"<reason>"}`.
fn response(status: StatusCode, reason: &str) -> ProxyResponse {
    let text = serde_json::json!({"error": "hmac_sign", "reason": reason}).to_string();
    body::respond(status, "application/json", text)
}
