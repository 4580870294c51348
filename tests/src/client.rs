//! Minimal HTTP/1.1 clients over plain TCP and TLS, with full control of the request line,
//! Host header, SNI and trusted roots (the things the agent's checks depend on).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// A response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The origin's echo, parsed.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not an echo: {}", self.text()))
    }

    /// An echoed request header (case-insensitive name).
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        echo_header(&self.echo(), name).map(str::to_string)
    }
}

/// A request header (case-insensitive name) in an origin's JSON echo.
pub fn echo_header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

/// Sends `req` over plain TCP to `addr`.
pub async fn http_request(addr: SocketAddr, req: http::Request<Full<Bytes>>) -> Reply {
    let tcp = TcpStream::connect(addr).await.expect("connect agent");
    exchange(tcp, req).await.expect("http exchange")
}

/// Sends `req` over TLS to `addr` with SNI `sni`, trusting `client_cfg`'s roots.
pub async fn https_request(
    addr: SocketAddr,
    sni: &str,
    client_cfg: Arc<rustls::ClientConfig>,
    req: http::Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client_cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    exchange(tls, req).await
}

async fn exchange<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<Reply, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `path` with a Host header.
pub fn get(host: &str, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// GET `path` with a Host header and `headers`.
pub fn get_with(host: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().uri(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// Opens an HTTP CONNECT tunnel to `target` (`host:port`) through the agent's tunnel listener
/// on a raw socket; returns the socket after asserting the 200.
pub async fn connect_tunnel(tunnel: SocketAddr, target: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(tunnel)
        .await
        .expect("connect tunnel listener");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("send CONNECT");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("CONNECT answered in time")
            .expect("read CONNECT reply");
        assert_eq!(n, 1, "closed during CONNECT");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// TLS over `io` with SNI `sni`, trusting `client_cfg`'s roots and offering `alpn`.
pub async fn tls_connect<S>(
    io: S,
    client_cfg: &rustls::ClientConfig,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut cfg = client_cfg.clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, io)
        .await
        .expect("tls handshake")
}

/// An HTTP/2 client connection over `io` (prior knowledge, or after ALPN `h2`); the connection
/// is driven in the background.
pub async fn h2_handshake<I, B>(io: I) -> hyper::client::conn::http2::SendRequest<B>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}
