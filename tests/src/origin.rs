//! A local upstream that answers with exactly what it received, plus a few special routes:
//! `/sse` (three server-sent events 300 ms apart), `/slow` (headers after 3 s),
//! `/status/NNN`, `/bytes/N`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::TestCa;

pub enum OriginKind {
    Http,
    /// HTTPS, HTTP/1.1 only (no ALPN).
    Https {
        names: Vec<String>,
    },
    /// HTTPS offering ALPN `h2` and `http/1.1`, serving whichever the client picks.
    HttpsH2 {
        names: Vec<String>,
    },
}

pub struct Origin {
    pub addr: SocketAddr,
    /// Requests served so far.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl Origin {
    /// A raw HTTP/1.1 origin that answers with the exact request head it received (header
    /// names in their wire casing), as JSON `{"head": "..."}`. One request per connection.
    pub async fn start_raw() -> Origin {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let hits = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    let end = buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .unwrap_or(buf.len());
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let body = serde_json::json!({ "head": head }).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream-Case: Kept\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                        body.len(),
                        body
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Origin { addr, hits, task }
    }

    /// Starts on 127.0.0.1:0. For HTTPS the certificate is signed by `ca`.
    pub async fn start(kind: OriginKind, ca: Option<&TestCa>) -> Origin {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), kind, ca).await
    }

    /// Starts on `bind` (e.g. an address inside a test network namespace).
    pub async fn start_on(bind: SocketAddr, kind: OriginKind, ca: Option<&TestCa>) -> Origin {
        let listener = TcpListener::bind(bind).await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (names, h2) = match kind {
            OriginKind::Http => (None, false),
            OriginKind::Https { names } => (Some(names), false),
            OriginKind::HttpsH2 { names } => (Some(names), true),
        };
        let acceptor = names.map(|names| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let alpn: &[&[u8]] = if h2 { &[b"h2", b"http/1.1"] } else { &[] };
            ca.expect("https origin needs a CA").acceptor(&names, alpn)
        });
        let h = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let hits = h.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        handle(req)
                    });
                    let mut b = http1::Builder::new();
                    b.preserve_header_case(true);
                    match acceptor {
                        Some(a) if h2 => {
                            if let Ok(tls) = a.accept(stream).await {
                                let auto = hyper_util::server::conn::auto::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                );
                                let _ = auto.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = b.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Origin { addr, hits, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn handle(req: http::Request<Incoming>) -> Result<http::Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/sse" {
        let events = futures_util::stream::iter(0..3).then(|i| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: event {i}\n\n"))))
        });
        let body = BodyExt::boxed(StreamBody::new(events));
        return Ok(http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .expect("sse response"));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        return Ok(http::Response::builder()
            .status(code)
            .body(full(Bytes::new()))
            .expect("status"));
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|c| c.parse::<usize>().ok())
    {
        return Ok(http::Response::new(full(Bytes::from(vec![b'x'; n]))));
    }
    // Echo: method, raw path+query, HTTP version, headers (name as received), body.
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let echo = serde_json::json!({
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Ok(http::Response::builder()
        .header("content-type", "application/json")
        .header("x-origin", "echo")
        .body(full(Bytes::from(echo.to_string())))
        .expect("echo response"))
}

fn full(b: Bytes) -> Body {
    BodyExt::boxed(Full::new(b))
}
