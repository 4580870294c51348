//! A WebSocket echo server for one already-accepted connection (tungstenite), recording the
//! `x-api-key` each handshake carried so tests can see what credential the agent injected.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Handshake `x-api-key` values, in arrival order.
pub type SeenKeys = Arc<Mutex<Vec<String>>>;

/// Serves one WebSocket on `io`, echoing text and binary messages until the client closes.
/// Paths with special answers: `/unauthorized` refuses the handshake with 401; `/bad-accept`
/// answers 101 with a `Sec-WebSocket-Accept` that does not match the key.
pub async fn serve_echo<S>(io: S, seen: SeenKeys)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let cb = |req: &Request, mut resp: Response| {
        let key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        seen.lock().unwrap().push(key);
        match req.uri().path() {
            "/unauthorized" => {
                let mut refused = http::Response::new(Some("no".to_string()));
                *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
                // Length-delimited: the connection is dropped right after (no TLS close_notify),
                // which would truncate a close-delimited body.
                refused
                    .headers_mut()
                    .insert("content-length", http::HeaderValue::from_static("2"));
                Err(refused)
            }
            "/bad-accept" => {
                resp.headers_mut().insert(
                    "sec-websocket-accept",
                    http::HeaderValue::from_static("bm90IHRoZSByaWdodCBvbmU="),
                );
                Ok(resp)
            }
            _ => Ok(resp),
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(io, cb).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}
