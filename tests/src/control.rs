//! Runs the real `iron-control` binary (SQLite in a temp state directory) and talks to its
//! API: principals, secrets, grants, proxies and network policies for managed-mode tests.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use iron_testkit::{ControlBuilder, ControlServer};
use serde_json::{Value, json};

use crate::client::http_request;

/// `iron-control` next to the agent binary under test (`cargo build -p iron-control`).
pub fn control_bin() -> PathBuf {
    crate::agent::agent_bin().with_file_name("iron-control")
}

/// A running `iron-control serve` ([`ControlServer`]: `addr`, `api_key`, `url()`, `kill()`,
/// ...) with the API calls managed-mode tests make; killed on drop.
pub struct Control(ControlServer);

impl Deref for Control {
    type Target = ControlServer;
    fn deref(&self) -> &ControlServer {
        &self.0
    }
}

impl DerefMut for Control {
    fn deref_mut(&mut self) -> &mut ControlServer {
        &mut self.0
    }
}

impl Control {
    /// A fresh server on a free loopback port with its own state directory below `dir`.
    pub fn start(dir: &Path) -> Control {
        Control(Self::builder(dir).start())
    }

    /// A server on `listen` reusing `dir`'s state; `api_key` is the key of an earlier start
    /// (a reused database logs no bootstrap key).
    pub fn start_on(dir: &Path, listen: &str, api_key: &str) -> Control {
        Control(Self::builder(dir).listen(listen).api_key(api_key).start())
    }

    fn builder(dir: &Path) -> ControlBuilder {
        ControlBuilder::new(control_bin()).state_dir(&dir.join("control-state"))
    }

    /// One API call with the API key; returns the status and the JSON body (`null` if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.api_key))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .expect("request");
        let r = http_request(self.addr, req).await;
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call("POST", path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {v}");
        v
    }

    /// A principal; returns its id.
    pub async fn principal(&self, foreign_id: &str) -> String {
        let v = self
            .create(
                "/api/v1/principals",
                json!({"data": {"namespace": "default", "foreign_id": foreign_id, "name": foreign_id}}),
            )
            .await;
        v["data"]["id"].as_str().expect("id").to_string()
    }

    /// A static secret stored on the control plane, injected as `header: <value>` on requests
    /// to `host`; returns its id.
    pub async fn secret(&self, foreign_id: &str, value: &str, header: &str, host: &str) -> String {
        let v = self
            .create(
                "/api/v1/static_secrets",
                json!({"data": {
                    "foreign_id": foreign_id,
                    "inject_config": {"header": header, "formatter": "{{ .Value }}"},
                    "source": {"source_type": "control_plane", "secret": value, "config": {}},
                    "rules": [{"host": host}]
                }}),
            )
            .await;
        v["data"]["id"].as_str().expect("id").to_string()
    }

    /// Grants a static secret to a principal; returns the grant id.
    pub async fn grant(&self, principal: &str, secret: &str) -> String {
        let v = self
            .create(
                "/api/v1/grants",
                json!({"data": {"principal_id": principal, "static_secret_id": secret}}),
            )
            .await;
        v["data"]["id"].as_str().expect("id").to_string()
    }

    /// A proxy assigned to `principal`; returns (id, token).
    pub async fn proxy(&self, principal: &str) -> (String, String) {
        let v = self
            .create(
                "/api/v1/proxies",
                json!({"data": {"name": "edge", "principal_id": principal}}),
            )
            .await;
        (
            v["data"]["id"].as_str().expect("id").to_string(),
            v["data"]["token"].as_str().expect("token").to_string(),
        )
    }

    /// A network policy (applies to every proxy) allowing `hosts`.
    pub async fn allow(&self, hosts: &[&str]) {
        let rules: Vec<Value> = hosts.iter().map(|h| json!({"host": h})).collect();
        self.create(
            "/v1/policies/network",
            json!({"name": "allow", "priority": 1, "rules": rules}),
        )
        .await;
    }
}
