//! Test support: the real `iron-control` binary with captured JSON logs, a small HTTP client,
//! a throwaway PostgreSQL cluster, and a local OAuth token endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iron_testkit::ControlBuilder;
use serde_json::Value;

pub use crate::pg::Postgres;
pub use crate::token_server::{TokenReply, TokenServer};
/// A running `iron-control serve` (shared with the end-to-end suite); killed on drop.
pub use iron_testkit::{ControlServer as Server, agent_bin, spawn_logged};

pub const BIN: &str = env!("CARGO_BIN_EXE_iron-control");

/// This package's `iron-control serve`, checking for due token refreshes every 100 ms.
pub fn server() -> ControlBuilder {
    ControlBuilder::new(BIN).env("IRON_CONTROL_REFRESH_TICK_MS", "100")
}

/// The API as the server's bootstrap key.
pub fn api(s: &Server) -> Api {
    Api::new(s.addr, &s.api_key)
}

/// A response: status, headers, parsed JSON (Null when the body is empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }
    pub fn id(&self) -> String {
        self.json["data"]["id"]
            .as_str()
            .expect("data.id")
            .to_owned()
    }
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }
    /// A 4xx error of the documented shape naming `field` in its details and message.
    #[track_caller]
    pub fn expect_field_error(&self, status: u16, field: &str) -> &Self {
        self.expect(status);
        let msg = self.json["error"]["message"].as_str().unwrap_or("");
        assert!(
            self.json["error"]["details"].get(field).is_some() && msg.contains(field),
            "error should name {field}: {}",
            self.text
        );
        self
    }
}

#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn new(addr: SocketAddr, key: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            key: key.to_owned(),
        }
    }

    pub fn with_key(&self, key: &str) -> Self {
        let mut a = self.clone();
        a.key = key.to_owned();
        a
    }

    /// A request with the API key (when set), a JSON body (when given) and extra headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.raw_bytes(method, path, body.map(Bytes::from), headers)
            .await
    }

    /// [`Api::raw`] with any body (`Content-Type: application/json` unless given).
    pub async fn raw_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !self.key.is_empty() {
            b = b.header("authorization", format!("Bearer {}", self.key));
        }
        let has_ct = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_ct {
            b = b.header("content-type", "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(body.unwrap_or_default()))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("response in time")
            .expect("response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.raw("GET", path, None, &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.raw("DELETE", path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.raw("POST", path, Some(body.to_string()), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.raw("PUT", path, Some(body.to_string()), &[]).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.raw("PATCH", path, Some(body.to_string()), &[]).await
    }

    /// `POST /api/v1/proxy/sync` with a proxy token.
    pub async fn sync(&self, proxy_token: &str, hash: Option<&str>) -> Resp {
        let body = match hash {
            Some(h) => serde_json::json!({ "config_hash": h }),
            None => serde_json::json!({}),
        };
        self.with_key(proxy_token)
            .post("/api/v1/proxy/sync", body)
            .await
    }
}

/// Polls `f` until it returns Some, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met in {secs}s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
