//! A fake LLM API on 127.0.0.1 speaking Anthropic Messages (`POST /v1/messages`) and OpenAI
//! Chat Completions (`POST /v1/chat/completions`), built on the recording [`TokenServer`].
//! It refuses a request without the right API key headers (401), and decides by the URL in
//! the envelope the agent sent: `/deny…` → DENY, `/garbage…` → prose instead of JSON,
//! `/fail…` → HTTP 500, anything else → ALLOW. `set_down(true)` answers 503 to everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use iron_agent_tests::token_server::Answer;
use iron_agent_tests::{Recorded, TokenServer};
use serde_json::{Value, json};

pub const KEY: &str = "sk-judge-key-0451-real";

pub struct FakeLlm {
    pub server: TokenServer,
    down: Arc<AtomicBool>,
}

/// The request body of a recorded call, parsed.
pub fn body(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).expect("LLM request body is JSON")
}

/// The envelope (the user message) of a recorded call, parsed.
pub fn envelope(r: &Recorded) -> Value {
    let b = body(r);
    let user = b["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .expect("a user message");
    serde_json::from_str(user["content"].as_str().expect("text content")).expect("envelope JSON")
}

fn decision_text(url: &str) -> Option<String> {
    let d = |decision: &str, reason: &str| {
        Some(json!({"decision": decision, "reason": reason}).to_string())
    };
    if url.starts_with("/deny") {
        d("DENY", "writes to billing are not allowed")
    } else if url.starts_with("/garbage") {
        Some("Looks fine to me, go ahead!".to_string())
    } else if url.starts_with("/fail") {
        None
    } else {
        d("ALLOW", "comment on the reviewed repository")
    }
}

fn answer(r: &Recorded, down: bool) -> Answer {
    let error = |status: u16, msg: &str| {
        (
            status,
            "application/json",
            json!({"type": "error", "error": {"type": "api_error", "message": msg}}).to_string(),
        )
    };
    if down {
        return error(503, "overloaded");
    }
    let anthropic = r.path() == "/v1/messages";
    let authorized = if anthropic {
        r.header("x-api-key") == Some(KEY) && r.header("anthropic-version") == Some("2023-06-01")
    } else {
        r.path() == "/v1/chat/completions"
            && r.header("authorization") == Some(&format!("Bearer {KEY}"))
    };
    if !authorized || r.method != "POST" || r.header("content-type") != Some("application/json") {
        return error(401, "bad credentials or endpoint");
    }
    let url = envelope(r)["url"].as_str().unwrap_or("").to_string();
    let Some(text) = decision_text(&url) else {
        return error(500, "internal failure");
    };
    let body = if anthropic {
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": body(r)["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 321, "output_tokens": 17},
        })
    } else {
        // Models often fence their JSON; the judge tolerates it.
        json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": format!("```json\n{text}\n```")}}],
            "usage": {"prompt_tokens": 400, "completion_tokens": 20, "total_tokens": 420},
        })
    };
    (200, "application/json", body.to_string())
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        Self::with_delay(Duration::ZERO).await
    }

    /// Every answer `delay` late (for timeouts).
    pub async fn with_delay(delay: Duration) -> FakeLlm {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let server = TokenServer::start(
            delay,
            Arc::new(move |r: &Recorded, _| answer(r, d.load(Ordering::SeqCst))),
        )
        .await;
        FakeLlm { server, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The `base_url` to configure.
    pub fn base_url(&self) -> String {
        self.server.url("")
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    pub fn count(&self) -> usize {
        self.server.count()
    }
}
