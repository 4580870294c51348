//! The real `iron-control serve`: on a free loopback port (or a given address), SQLite in a
//! state directory unless a database URL is given, the bootstrap API key read from its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::logs::{LogLines, spawn_logged};

/// How to start one `iron-control serve`.
pub struct ControlBuilder {
    bin: PathBuf,
    listen: String,
    state_dir: Option<PathBuf>,
    database: Option<String>,
    env: Vec<(String, String)>,
    /// `None`: a fresh database, whose bootstrap key the server logs.
    api_key: Option<String>,
}

impl ControlBuilder {
    /// The binary at `bin` (`env!("CARGO_BIN_EXE_iron-control")` in control's own tests).
    pub fn new(bin: impl Into<PathBuf>) -> ControlBuilder {
        ControlBuilder {
            bin: bin.into(),
            listen: "127.0.0.1:0".into(),
            state_dir: None,
            database: None,
            env: Vec::new(),
            api_key: None,
        }
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// `--database URL` instead of SQLite in the state directory.
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.into());
        self
    }

    /// The state directory (default: a fresh temp dir owned by the server); pass an earlier
    /// server's to restart on its state.
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// `--listen ADDR` instead of a free loopback port.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    /// The database already holds a key, so no bootstrap key is logged; the server's
    /// `api_key` stays empty.
    pub fn no_bootstrap(self) -> Self {
        self.api_key(String::new())
    }

    /// The database already holds `key` (an earlier server's): no bootstrap key is logged.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Starts it and waits until it listens (and, on a fresh database, logged its key).
    pub fn start(self) -> ControlServer {
        assert!(
            self.bin.is_file(),
            "{} is missing: run `cargo build -p iron-control`",
            self.bin.display()
        );
        let (tmp, state_dir) = match self.state_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().join("state");
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--listen", &self.listen, "--state-dir"])
            .arg(&state_dir)
            .env_remove("IRON_CONTROL_DATABASE_URL")
            .env_remove("IRON_CONTROL_SECRET_KEY");
        if let Some(db) = &self.database {
            cmd.args(["--database", db]);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let (child, lines) = spawn_logged(cmd);
        let mut s = ControlServer {
            child: Some(child),
            lines,
            addr: "127.0.0.1:1".parse().expect("addr"),
            api_key: self.api_key.clone().unwrap_or_default(),
            state_dir,
            _tmp: tmp,
        };
        let listening = s.wait_log(|v| v["msg"] == "listening");
        s.addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening addr");
        if self.api_key.is_none() {
            let b = s.wait_log(|v| v["msg"] == "bootstrap api key");
            s.api_key = b["api_key"].as_str().expect("api_key").to_owned();
        }
        s
    }
}

/// A running `iron-control serve`; killed on drop.
pub struct ControlServer {
    child: Option<Child>,
    lines: LogLines,
    pub addr: SocketAddr,
    /// The bootstrap key (or the one given to [`ControlBuilder::api_key`]).
    pub api_key: String,
    pub state_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl ControlServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.lines.text()
    }

    pub fn json_lines(&self) -> Vec<Value> {
        self.lines.json()
    }

    /// Waits (30 s at most) for a JSON log line matching `pred`; fails the test if the server
    /// exits first.
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

    /// SIGTERM and wait (15 s at most); returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
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

    /// Kills it at once (its port is free again).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.kill();
    }
}
