//! Runs the real `iron-control` binary (SQLite in a temp state directory) and talks to its
//! API: principals, secrets, grants, proxies and network policies for managed-mode tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::client::http_request;

/// `iron-control` next to the agent binary under test (`cargo build -p iron-control`).
pub fn control_bin() -> PathBuf {
    crate::agent::agent_bin().with_file_name("iron-control")
}

/// A running `iron-control serve`; killed on drop.
pub struct Control {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
    pub api_key: String,
    pub state_dir: PathBuf,
}

impl Control {
    /// A fresh server on a free loopback port with its own state directory below `dir`.
    pub fn start(dir: &Path) -> Control {
        Self::start_on(dir, "127.0.0.1:0", None)
    }

    /// A server on `listen` reusing `dir`'s state; `api_key` is the key of an earlier start
    /// (a reused database logs no bootstrap key).
    pub fn start_on(dir: &Path, listen: &str, api_key: Option<&str>) -> Control {
        let bin = control_bin();
        assert!(
            bin.is_file(),
            "{} is missing: run `cargo build -p iron-control`",
            bin.display()
        );
        let state_dir = dir.join("control-state");
        let mut cmd = Command::new(&bin);
        cmd.args(["serve", "--listen", listen, "--state-dir"])
            .arg(&state_dir)
            .env_remove("IRON_CONTROL_DATABASE_URL")
            .env_remove("IRON_CONTROL_SECRET_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn iron-control");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().expect("lines").push(line);
            }
        });
        let mut c = Control {
            child: Some(child),
            lines,
            addr: "127.0.0.1:1".parse().expect("addr"),
            api_key: api_key.unwrap_or_default().to_string(),
            state_dir,
        };
        let listening = c.wait_log(|v| v["msg"] == "listening");
        c.addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening addr");
        if api_key.is_none() {
            let b = c.wait_log(|v| v["msg"] == "bootstrap api key");
            c.api_key = b["api_key"].as_str().expect("api_key").to_string();
        }
        c
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    fn wait_log(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "iron-control did not log in time:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (the port is free again).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}
