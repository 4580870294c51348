//! The HMAC-verifying upstream (`tests/helpers/hmac_upstream.py`, Python's hmac/hashlib as an
//! independent implementation), the schemes it checks, and a raw TLS client for request
//! framings the hyper client will not produce (chunked, short bodies).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use iron_agent_tests::{TestCa, Transform};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One signing scheme: the `hmac_sign` config the agent gets and the facts the verifier
/// needs to recompute the signature on its own.
pub struct Scheme {
    pub name: &'static str,
    /// `None` = leave the field out of the config (the default applies).
    pub timestamp: Option<&'static str>,
    pub algorithm: Option<&'static str>,
    pub key_encoding: Option<&'static str>,
    pub output_encoding: Option<&'static str>,
    pub message: &'static str,
    /// The verifier's longhand version of `message` (see the Python `string_to_sign`).
    pub recipe: &'static str,
    /// (credential name, env var, value).
    pub creds: Vec<(&'static str, &'static str, &'static str)>,
    /// (header name as configured, value template).
    pub headers: Vec<(&'static str, &'static str)>,
    pub sig_header: &'static str,
    /// How the signature header looks, Python `str.format` over `sig` and the credentials.
    pub sig_template: &'static str,
    pub ts_header: &'static str,
    /// Headers that must carry a credential verbatim: (header, credential name).
    pub cred_headers: Vec<(&'static str, &'static str)>,
    pub allow_chunked_body: bool,
    /// The verifier knows it, but the agent has no transform for it (negative control).
    pub agent_signs: bool,
}

impl Scheme {
    /// The `hmac_sign` transform entry the agent gets.
    pub fn transform(&self) -> Transform {
        let mut signature = serde_json::Map::new();
        for (k, v) in [
            ("algorithm", self.algorithm),
            ("key_encoding", self.key_encoding),
            ("output_encoding", self.output_encoding),
        ] {
            if let Some(v) = v {
                signature.insert(k.into(), json!(v));
            }
        }
        signature.insert("message".into(), json!(self.message));
        let credentials: serde_json::Map<String, Value> = self
            .creds
            .iter()
            .map(|(name, var, _)| (name.to_string(), json!({"type": "env", "var": var})))
            .collect();
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        let mut config = serde_json::Map::new();
        if let Some(f) = self.timestamp {
            config.insert("timestamp".into(), json!({ "format": f }));
        }
        config.insert("signature".into(), signature.into());
        config.insert("credentials".into(), credentials.into());
        config.insert("headers".into(), headers.into());
        if self.allow_chunked_body {
            config.insert("allow_chunked_body".into(), true.into());
        }
        config.insert(
            "rules".into(),
            json!([{"host": "localhost", "paths": [format!("/s/{}/*", self.name)]}]),
        );
        Transform::new("hmac_sign", config.into())
    }

    fn verifier_json(&self) -> Value {
        let creds: serde_json::Map<String, Value> = self
            .creds
            .iter()
            .map(|(n, _, v)| (n.to_string(), json!(v)))
            .collect();
        let cred_headers: serde_json::Map<String, Value> = self
            .cred_headers
            .iter()
            .map(|(h, c)| (h.to_string(), json!(c)))
            .collect();
        json!({
            "timestamp_format": self.timestamp.unwrap_or("unix_seconds"),
            "algorithm": self.algorithm.unwrap_or("sha256"),
            "key_encoding": self.key_encoding.unwrap_or("raw"),
            "output_encoding": self.output_encoding.unwrap_or("base64"),
            "recipe": self.recipe,
            "creds": creds,
            "sig_header": self.sig_header,
            "sig_template": self.sig_template,
            "ts_header": self.ts_header,
            "cred_headers": cred_headers,
        })
    }
}

/// The Python verifier, running until dropped.
pub struct Upstream {
    child: Child,
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn start(dir: &Path, ca: &TestCa, schemes: &[Scheme]) -> Upstream {
        let (cert_path, key_path) = ca.write_server_cert(dir, "upstream", &["localhost"]);
        let spec: serde_json::Map<String, Value> = schemes
            .iter()
            .map(|s| (s.name.to_string(), s.verifier_json()))
            .collect();
        let spec_path = dir.join("schemes.json");
        std::fs::write(&spec_path, Value::Object(spec).to_string()).unwrap();

        let mut child = Command::new("python3")
            .arg(script())
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .arg("--schemes")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is required (cargo xtask setup installs it)");
        let stdout = child.stdout.take().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = tx.send(port.parse::<u16>().unwrap());
                } else if let Some(r) = line.strip_prefix("REQ ") {
                    reqs.lock().unwrap().push(r.to_string());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("hmac upstream did not start");
        Upstream {
            child,
            port,
            requests,
        }
    }

    /// Requests the verifier received so far (`METHOD target`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> PathBuf {
    iron_agent_tests::helper("hmac_upstream.py")
}

/// A response read off a raw connection.
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON: {} {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Writes `raw` (a whole HTTP/1.1 request; send `Connection: close`) over TLS to the agent,
/// optionally half-closes, and reads the response until the server closes.
pub async fn raw_https(
    addr: SocketAddr,
    client_cfg: Arc<rustls::ClientConfig>,
    raw: &[u8],
    half_close: bool,
) -> RawReply {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(raw).await.unwrap();
    tls.flush().await.unwrap();
    if half_close {
        tls.shutdown().await.unwrap();
    }
    let mut buf = Vec::new();
    // A peer that closes without close_notify is fine here: we only need the bytes.
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut buf)).await;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    RawReply {
        status,
        head,
        body: buf[end + 4..].to_vec(),
    }
}
