//! A WebSocket-over-HTTP/2 client (RFC 8441 extended CONNECT) for the root-only eBPF tests: run
//! as a governed test user, it connects to `HOST:443` itself (so name resolution and the
//! connection go through the eBPF redirect), trusting only `CA_PEM`, opens `wss://HOST/PATH`,
//! sends one text message, reads the echo, closes, and prints `{"status":..,"echo":..}`.
//!
//! Usage: ws-h2-client HOST PATH CA_PEM

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESSAGE: &[u8] = b"hello over h2";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, host, path, ca] = args.as_slice() else {
        bail!("usage: ws-h2-client HOST PATH CA_PEM");
    };
    let out = tokio::time::timeout(Duration::from_secs(15), run(host, path, ca))
        .await
        .context("timed out")??;
    println!("{out}");
    Ok(())
}

async fn run(host: &str, path: &str, ca: &str) -> Result<serde_json::Value> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("read CA")? {
        roots.add(cert.context("parse CA")?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect((host, 443))
        .await
        .context("connect")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(host.to_string())?, tcp)
        .await
        .context("tls")?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("h2 not negotiated");
    }
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{host}{path}"))
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Ok(serde_json::json!({ "status": status, "echo": "" }));
    }
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await?);
    // One masked text frame (client frames must be masked), then read the echoed frame.
    ws.write_all(&frame(0x1, MESSAGE)).await?;
    let mut head = [0u8; 2];
    ws.read_exact(&mut head).await?;
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    ws.read_exact(&mut payload).await?;
    ws.write_all(&frame(0x8, &1000u16.to_be_bytes())).await?;
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest).await;
    Ok(serde_json::json!({
        "status": status,
        "opcode": head[0] & 0x0f,
        "echo": String::from_utf8_lossy(&payload),
    }))
}

/// A final, masked frame with a payload shorter than 126 bytes.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand_mask();
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn rand_mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5a5a_5a5a);
    nanos.to_le_bytes()
}
