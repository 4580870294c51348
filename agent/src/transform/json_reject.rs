//! Refusals of the signing transforms (`aws_auth`, `hmac_sign`): the documented reason, its
//! status, iron-proxy's JSON body `{"error":"<transform>","reason":"<reason>"}`, and contextual
//! annotations (`credential`, `header`, `error`, lengths) — never a credential value.

use http::StatusCode;
use serde_json::Value;

use crate::transform::{RequestCx, Verdict, body};

pub struct JsonReject {
    transform: &'static str,
    status: StatusCode,
    reason: &'static str,
    context: Vec<(&'static str, Value)>,
}

impl JsonReject {
    pub fn new(transform: &'static str, status: StatusCode, reason: &'static str) -> Self {
        Self {
            transform,
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

    /// Adds several contextual annotations.
    pub fn with_all(mut self, context: Vec<(&'static str, Value)>) -> Self {
        self.context.extend(context);
        self
    }

    /// Annotates the trace (context, then `rejected`) and answers with the JSON body.
    pub fn into_verdict(self, cx: &mut RequestCx) -> Verdict {
        for (k, v) in self.context {
            cx.annotate(k, v);
        }
        cx.annotate("rejected", self.reason);
        let text = serde_json::json!({"error": self.transform, "reason": self.reason}).to_string();
        Verdict::Reject(Some(body::respond(self.status, "application/json", text)))
    }
}
