//! moto's server mode (a fake AWS: Secrets Manager, SSM) on an ephemeral loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::http_request;

const PYTHON: &str = "python3";

/// Installs `moto[server]` once per process if it is not importable; panics (never skips)
/// when it cannot.
fn ensure_moto() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        let importable = || {
            Command::new(PYTHON)
                .args(["-c", "import moto.server"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if importable() {
            return Ok(());
        }
        let pip = Command::new(PYTHON)
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .status();
        if importable() {
            return Ok(());
        }
        Err(format!(
            "moto is required for the AWS secret-source tests and could not be installed \
             (`{PYTHON} -m pip install 'moto[server]'` → {pip:?}); install it and re-run"
        ))
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// A moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        ensure_moto();
        let mut child = Command::new(PYTHON)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning moto server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stderr after the banner so moto never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("moto server did not report its port within 60 s");
        };
        Moto { child, port }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One AWS JSON-protocol call (moto does not check signatures, but routes by the scope).
    pub async fn call(&self, service: &str, target: &str, body: serde_json::Value) {
        let req = http::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, \
                     SignedHeaders=host, Signature=00"
                ),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let addr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let r = http_request(addr, req).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
