//! Runs the real `iron-agent` binary with a config and captures its JSON log lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use iron_testkit::LogLines;
use serde_json::Value;

use crate::AgentConfig;

pub use iron_testkit::agent_bin;

/// The binary run to completion with a time limit: `iron-agent ARGS` ([`agent_command`]).
pub fn run_agent(args: &[&str], limit: Duration) -> Finished {
    let child = agent_command(args).spawn().expect("spawn iron-agent");
    wait_finished(child, limit, &format!("iron-agent {args:?}"))
}

/// `iron-agent ARGS` with no input and its output captured, without the `SUDO_UID`/`SUDO_GID`
/// a `sudo` run would pass on (the commands that act for "the invoking user" read them).
pub fn agent_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Makes a debug-build agent treat the BPF LSM as unusable, so the "protections off" paths run
/// on a host where it works (a release build ignores it).
pub const TEST_LSM_OFF: &str = "IRON_AGENT_TEST_LSM_OFF";

/// Whether an agent started with [`TEST_LSM_OFF`] honoured it, judged from its `logs`. The
/// suite's own (debug) build must: only a binary named by `IRON_AGENT_BIN`, maybe a release
/// build, may ignore it (the caller then skips, saying so).
pub fn test_lsm_off_honoured(logs: &str) -> bool {
    logs.contains("IRON_AGENT_TEST_LSM_OFF is set") || std::env::var_os("IRON_AGENT_BIN").is_none()
}

/// How a process run to completion ended.
pub struct Finished {
    /// The exit code, -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub pid: u32,
}

/// Waits for `child` to exit and collects its output; past `limit` it is killed and the test
/// fails, naming `what` and showing its stderr.
pub fn wait_finished(mut child: Child, limit: Duration, what: &str) -> Finished {
    let pid = child.id();
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        pid,
    }
}

/// `iron-agent generate-ca --outdir dir`: the CA a config can name (`dir/ca.crt`, `dir/ca.key`).
pub fn generate_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let dir_arg = dir.to_str().expect("utf-8 path");
    let out = run_agent(
        &["generate-ca", "--outdir", dir_arg],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    (dir.join("ca.crt"), dir.join("ca.key"))
}

pub struct AgentBuilder {
    config: String,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl AgentBuilder {
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Extra arguments placed instead of the default `run --config FILE`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// [`AgentBuilder::start`], then checks that the agent attached its eBPF programs
    /// (`intercept: mode: ebpf`).
    pub fn start_attached(self) -> Agent {
        let agent = self.start();
        assert!(
            agent.logs().contains("eBPF interception attached"),
            "{}",
            agent.logs()
        );
        agent
    }

    /// Starts the agent and waits until it logged every listener it will open (or exited).
    pub fn start(self) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_path = dir.path().join("agent.yaml");
        std::fs::write(&cfg_path, &self.config).expect("write config");
        let mut cmd = Command::new(agent_bin());
        if self.args.is_empty() {
            cmd.arg("run").arg("--config").arg(&cfg_path);
        } else {
            cmd.args(
                self.args
                    .iter()
                    .map(|a| a.replace("{config}", &cfg_path.to_string_lossy())),
            );
        }
        // Tests never reach outside loopback; keep the host's proxy settings out of the agent.
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", agent_bin().display()));
        let lines = LogLines::capture(child.stderr.take().expect("stderr"));
        let mut agent = Agent {
            child: Some(child),
            lines,
            listeners: HashMap::new(),
            _dir: dir,
            config_path: cfg_path,
        };
        agent.wait_started();
        agent
    }
}

pub struct Agent {
    child: Option<Child>,
    lines: LogLines,
    pub listeners: HashMap<String, SocketAddr>,
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Agent {
    /// An agent running `config`.
    pub fn with(config: &AgentConfig) -> AgentBuilder {
        Self::with_config(&config.to_yaml())
    }

    /// An agent running the YAML text `config` as is (tests of the config parser itself).
    pub fn with_config(config: &str) -> AgentBuilder {
        AgentBuilder {
            config: config.to_string(),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    fn wait_started(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let started = self
                .json_lines()
                .iter()
                .any(|v| v["msg"] == "iron-agent starting");
            for v in self.json_lines() {
                if v["msg"] == "listening"
                    && let (Some(name), Some(addr)) = (v["listener"].as_str(), v["addr"].as_str())
                    && let Ok(a) = addr.parse()
                {
                    self.listeners.insert(name.to_string(), a);
                }
            }
            if started {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return; // exited; callers inspect status and logs
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent did not start in time; logs:\n{}", self.logs());
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no {listener} listener; logs:\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        self.lines.text()
    }

    /// Waits (bounded) until the agent's output contains `needle`: log lines may be written
    /// just after the client saw the outcome they describe.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Fails the test if `secret` appears anywhere in the agent's output.
    pub fn assert_not_logged(&self, secret: &str) {
        assert!(
            !self.logs().contains(secret),
            "secret value leaked into the agent's output"
        );
    }

    /// Stops reading the agent's stderr (a stalled log collector) until [`Agent::resume_stderr`].
    pub fn pause_stderr(&self) {
        self.lines.pause();
    }

    pub fn resume_stderr(&self) {
        self.lines.resume();
    }

    pub fn json_lines(&self) -> Vec<Value> {
        self.lines.json()
    }

    /// Audit records (`msg == "request"`) written so far.
    pub fn audits(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["msg"] == "request")
            .collect()
    }

    /// Waits until at least `n` audit records exist; returns them all.
    pub fn wait_audits(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let a = self.audits();
            if a.len() >= n || Instant::now() > deadline {
                assert!(
                    a.len() >= n,
                    "expected {n} audit records, got {}; logs:\n{}",
                    a.len(),
                    self.logs()
                );
                return a;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until `n` audit records match `pred`; returns them.
    pub fn audits_where(&self, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Value> = self.audits().into_iter().filter(|v| pred(v)).collect();
            if found.len() >= n || Instant::now() > deadline {
                assert_eq!(
                    found.len(),
                    n,
                    "matching audit records; logs:\n{}",
                    self.logs()
                );
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The single audit record matching `pred`, waiting for it to appear.
    pub fn audit_where(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Value> = self.audits().into_iter().filter(|v| pred(v)).collect();
            if !found.is_empty() || Instant::now() > deadline {
                assert_eq!(
                    found.len(),
                    1,
                    "expected one matching audit record; logs:\n{}",
                    self.logs()
                );
                return found.into_iter().next().expect("one");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal and waits (bounded) for exit.
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        let pid = self.pid() as i32;
        // SAFETY: plain kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, sig);
        }
        self.wait_exit(Duration::from_secs(15))
    }

    /// Waits for the process to exit on its own (bounded), returning its status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running agent");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                // Give the reader thread a moment to drain stderr.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not exit in time; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A paused reader would wait forever for a child that is gone.
        self.lines.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
