//! The common shape of a MITM end-to-end test: a temp dir with the test's files, the agent's
//! MITM CA, the agent trusting exactly the test's upstream CAs (`SSL_CERT_FILE`), and a client
//! that talks HTTPS to the agent as a workload would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::client::get;
use crate::config::{AgentConfig, Transform};
use crate::{Agent, Origin, OriginKind, Reply, TestCa, https_request};

/// A started agent with its MITM CA and temp dir (kept alive as long as the agent).
pub struct MitmAgent {
    pub agent: Agent,
    pub mitm: TestCa,
    pub dir: tempfile::TempDir,
}

/// Everything before the agent starts.
pub struct MitmAgentBuilder {
    dir: tempfile::TempDir,
    trusted: String,
    env: Vec<(String, String)>,
}

impl MitmAgent {
    /// A fresh temp dir holding `files` (name, content).
    pub fn prepare(files: &[(&str, &str)]) -> MitmAgentBuilder {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        MitmAgentBuilder {
            dir,
            trusted: String::new(),
            env: Vec::new(),
        }
    }

    /// Sends `req` to the agent's HTTPS listener (SNI `localhost`), trusting the MITM CA.
    pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Reply {
        https_request(
            self.agent.addr("https"),
            "localhost",
            self.mitm.client_config(),
            req,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; agent logs:\n{}", self.agent.logs()))
    }

    /// None of `values` (credentials, minted tokens) appears anywhere in the agent's output.
    pub fn assert_not_in_logs(&self, values: &[&str]) {
        let logs = self.agent.logs();
        for v in values {
            assert!(!logs.contains(v), "a credential value leaked into the logs");
        }
    }

    /// Exactly `n` audit records, after giving stragglers `settle` to show up.
    pub fn assert_audit_count(&self, n: usize, settle: Duration) -> Vec<Value> {
        self.agent.wait_audits(n);
        std::thread::sleep(settle);
        let all = self.agent.audits();
        assert_eq!(all.len(), n, "one audit record per request: {all:?}");
        all
    }
}

impl MitmAgentBuilder {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `{dir}` in `text` replaced by the temp dir.
    pub fn expand(&self, text: &str) -> String {
        text.replace("{dir}", &self.dir.path().to_string_lossy())
    }

    /// `{dir}` in every string of `transforms`' configs replaced by the temp dir.
    pub fn expand_transforms(&self, mut transforms: Vec<Transform>) -> Vec<Transform> {
        for t in &mut transforms {
            crate::config::expand_dir(&mut t.config, self.dir.path());
        }
        transforms
    }

    /// The agent trusts `ca` for its upstream connections.
    pub fn trust(mut self, ca: &TestCa) -> Self {
        self.trusted.push_str(&ca.cert_pem);
        self
    }

    /// Sets one variable of the agent's environment (`{dir}` expanded).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        let v = self.expand(v);
        self.env.push((k.to_string(), v));
        self
    }

    pub fn envs(self, env: &[(&str, &str)]) -> Self {
        env.iter().fold(self, |b, (k, v)| b.env(k, v))
    }

    /// Starts the agent with the config `config(ca_cert, ca_key)` builds around the MITM CA.
    pub fn start(self, config: impl FnOnce(&Path, &Path) -> AgentConfig) -> MitmAgent {
        let ca_path: PathBuf = self.dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, &self.trusted).unwrap();
        let mitm = TestCa::new("mitm");
        let (c, k) = mitm.write(self.dir.path());
        let mut b = Agent::with(&config(&c, &k)).env("SSL_CERT_FILE", ca_path.to_string_lossy());
        for (k, v) in &self.env {
            b = b.env(k, v.as_str());
        }
        MitmAgent {
            agent: b.start(),
            mitm,
            dir: self.dir,
        }
    }

    /// Starts the agent on [`AgentConfig::loopback`] with `transforms` (`{dir}` expanded).
    pub fn start_loopback(self, transforms: Vec<Transform>) -> MitmAgent {
        let transforms = self.expand_transforms(transforms);
        self.start(|c, k| AgentConfig::loopback(c, k).transforms(transforms))
    }
}

/// An upstream the tests address as `localhost:PORT`.
pub trait Upstream {
    fn port(&self) -> u16;
}

impl Upstream for Origin {
    fn port(&self) -> u16 {
        Origin::port(self)
    }
}

/// A started MITM agent and the upstream it forwards to: the shape of most transform tests.
/// Derefs to the [`MitmAgent`].
pub struct Setup<U = Origin> {
    pub m: MitmAgent,
    pub origin: U,
}

impl<U> std::ops::Deref for Setup<U> {
    type Target = MitmAgent;
    fn deref(&self) -> &MitmAgent {
        &self.m
    }
}

impl<U> std::ops::DerefMut for Setup<U> {
    fn deref_mut(&mut self) -> &mut MitmAgent {
        &mut self.m
    }
}

impl<U: Upstream> Setup<U> {
    /// `localhost:{upstream port}`: the Host (and authority) of requests to the upstream.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.origin.port())
    }

    /// GET `path` on the upstream through the agent's HTTPS listener.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(get(&self.host(), path)).await
    }
}

impl Setup {
    /// An HTTPS echo origin on localhost, and the agent (trusting the origin's CA, with `env`
    /// and `files` in its temp dir) on [`AgentConfig::loopback`] with `transforms` (`{dir}` in
    /// their strings is the temp dir).
    pub async fn localhost(
        transforms: Vec<Transform>,
        env: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Setup {
        let (origin, origin_ca) = localhost_origin().await;
        let m = MitmAgent::prepare(files)
            .trust(&origin_ca)
            .envs(env)
            .start_loopback(transforms);
        Setup { m, origin }
    }
}

/// An HTTPS echo origin for `localhost` and the CA that issued its certificate.
pub async fn localhost_origin() -> (Origin, TestCa) {
    let ca = TestCa::new("origin");
    let origin = Origin::start(
        OriginKind::Https {
            names: vec!["localhost".into()],
        },
        Some(&ca),
    )
    .await;
    (origin, ca)
}
