//! The common shape of a MITM end-to-end test: a temp dir with the test's files, the agent's
//! MITM CA, the agent trusting exactly the test's upstream CAs (`SSL_CERT_FILE`), and a client
//! that talks HTTPS to the agent as a workload would.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;

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
}

impl MitmAgentBuilder {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `{dir}` in `text` replaced by the temp dir.
    pub fn expand(&self, text: &str) -> String {
        text.replace("{dir}", &self.dir.path().to_string_lossy())
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
    pub fn start(self, config: impl FnOnce(&Path, &Path) -> String) -> MitmAgent {
        let ca_path: PathBuf = self.dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, &self.trusted).unwrap();
        let mitm = TestCa::new("mitm");
        let (c, k) = mitm.write(self.dir.path());
        let mut b =
            Agent::with_config(&config(&c, &k)).env("SSL_CERT_FILE", ca_path.to_string_lossy());
        for (k, v) in &self.env {
            b = b.env(k, v.as_str());
        }
        MitmAgent {
            agent: b.start(),
            mitm,
            dir: self.dir,
        }
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
