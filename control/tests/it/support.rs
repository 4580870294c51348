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
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
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

/// The highest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (run `cargo xtask setup`)")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql")
        .1
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A throwaway PostgreSQL cluster in a temp dir on 127.0.0.1 (run as the `postgres` system
/// user when we are root); stopped and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    fn as_owner(&self, prog: &str) -> Command {
        as_pg_owner(&self.bin.join(prog))
    }

    pub fn start() -> Postgres {
        let bin = pg_bin();
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(tmp.path())
                .status()
                .expect("chown");
            assert!(st.success(), "chown of the cluster dir failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let pg = Postgres {
            bin,
            data,
            port,
            _tmp: tmp,
        };
        let out = pg
            .as_owner("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&pg.data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            pg.data.display()
        );
        let out = pg
            .as_owner("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&pg.data)
            .arg("-l")
            .arg(pg.data.join("log"))
            .args(["-o", &opts, "start"])
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(pg.data.join("log")).unwrap_or_default()
        );
        pg
    }

    /// Creates database `name`; returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let out = self
            .as_owner("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("createdb");
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql; returns stdout (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .as_owner("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-At", "-d", db, "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn as_pg_owner(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c.current_dir("/");
        c
    } else {
        Command::new(prog)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// What the local token endpoint answers next.
#[derive(Clone, Debug)]
pub enum TokenReply {
    Ok {
        access_token: String,
        expires_in: i64,
        refresh_token: Option<String>,
    },
    Status(u16, Value),
}

/// One request the token endpoint saw: form body and headers.
pub type Recorded = (String, Vec<(String, String)>);

/// A local OAuth token endpoint: records each form body, answers from a script (the last
/// reply repeats).
pub struct TokenServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Vec<TokenReply>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(script: Vec<TokenReply>) -> TokenServer {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let (rq, sc) = (requests.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rq, sc) = (rq.clone(), sc.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (rq, sc) = (rq.clone(), sc.clone());
                        async move {
                            let headers: Vec<(String, String)> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            rq.lock()
                                .expect("requests")
                                .push((String::from_utf8_lossy(&body).into_owned(), headers));
                            let reply = {
                                let mut s = sc.lock().expect("script");
                                if s.len() > 1 {
                                    s.remove(0)
                                } else {
                                    s[0].clone()
                                }
                            };
                            let (status, body) = match reply {
                                TokenReply::Ok {
                                    access_token,
                                    expires_in,
                                    refresh_token,
                                } => (
                                    200,
                                    serde_json::json!({
                                        "access_token": access_token,
                                        "token_type": "Bearer",
                                        "expires_in": expires_in,
                                        "refresh_token": refresh_token,
                                    }),
                                ),
                                TokenReply::Status(s, b) => (s, b),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
                                    .expect("response"),
                            )
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        TokenServer {
            url: format!("http://{addr}/token"),
            requests,
            script,
            task,
        }
    }

    pub fn set_script(&self, s: Vec<TokenReply>) {
        *self.script.lock().expect("script") = s;
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }

    /// Form fields of request `i`.
    pub fn form(&self, i: usize) -> Vec<(String, String)> {
        let body = self.requests.lock().expect("requests")[i].0.clone();
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
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
