//! Test support: the real `iron-control` binary with captured JSON logs, a small HTTP client,
//! a throwaway PostgreSQL cluster, and a local OAuth token endpoint.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use crate::pg::Postgres;
pub use crate::token_server::{TokenReply, TokenServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_iron-control");

/// A running `iron-control serve`; killed on drop.
pub struct Server {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
    pub api_key: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub struct ServerBuilder {
    env: Vec<(String, String)>,
    database: Option<String>,
    dir: Option<PathBuf>,
    expect_bootstrap: bool,
}

impl ServerBuilder {
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.into());
        self
    }
    /// Reuse a state directory (restart tests).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }
    /// The database already holds a key: no bootstrap line expected.
    pub fn no_bootstrap(mut self) -> Self {
        self.expect_bootstrap = false;
        self
    }

    pub fn start(self) -> Server {
        let (tmp, dir) = match self.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("state");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&dir)
            .env_remove("IRON_CONTROL_DATABASE_URL")
            .env_remove("IRON_CONTROL_SECRET_KEY")
            .env("IRON_CONTROL_REFRESH_TICK_MS", "100");
        if let Some(db) = &self.database {
            cmd.args(["--database", db]);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let (child, lines) = spawn_logged(cmd);
        let mut s = Server {
            child: Some(child),
            lines,
            addr: "127.0.0.1:1".parse().expect("addr"),
            api_key: String::new(),
            dir,
            _tmp: tmp,
        };
        let listening = s.wait_log(|v| v["msg"] == "listening");
        s.addr = listening["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("addr");
        if self.expect_bootstrap {
            let b = s.wait_log(|v| v["msg"] == "bootstrap api key");
            s.api_key = b["api_key"].as_str().expect("api_key").to_owned();
        }
        s
    }
}

pub fn spawn_logged(mut cmd: Command) -> (Child, Arc<Mutex<Vec<String>>>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("stderr");
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            l.lock().expect("lines").push(line);
        }
    });
    (child, lines)
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            env: Vec::new(),
            database: None,
            dir: None,
            expect_bootstrap: true,
        }
    }

    pub fn start() -> Server {
        Self::builder().start()
    }

    pub fn logs(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_log(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.json_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("iron-control exited ({st}); logs:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "log line not seen; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Api {
        Api::new(self.addr, &self.api_key)
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("iron-control did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
