//! Exact header-name casing on HTTP/1.1 for headers a transform sets with a configured name
//! (`inject: {header: "X-API-Key"}`), while every other header keeps the client's casing.
//!
//! hyper records wire casing in a private request extension. We cannot construct it directly,
//! so when (and only when) a transform asked for a casing, we let hyper itself write the
//! request head into memory (revealing the client's casing), rewrite the names we must, and let
//! hyper parse the result back, taking the casing extension from the parsed request. Requests
//! without configured casing never pay for this.

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Header names a transform wants written exactly like this (request extension).
#[derive(Debug, Clone, Default)]
pub struct ConfiguredCasing(pub Vec<String>);

impl ConfiguredCasing {
    /// Records that `name` must be sent with exactly this casing.
    pub fn insert<B>(req: &mut Request<B>, name: &str) {
        let ext = req.extensions_mut();
        match ext.get_mut::<ConfiguredCasing>() {
            Some(c) => {
                c.0.retain(|n| !n.eq_ignore_ascii_case(name));
                c.0.push(name.to_string());
            }
            None => {
                ext.insert(ConfiguredCasing(vec![name.to_string()]));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CasingError {
    #[error("applying configured header casing: {0}")]
    Head(#[from] http::Error),
    #[error("applying configured header casing: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("applying configured header casing: {0}")]
    Io(#[from] std::io::Error),
    #[error("applying configured header casing: request head did not parse")]
    Unparsed,
}

/// Applies [`ConfiguredCasing`] (if any) to the request's header-case record.
pub async fn apply<B>(req: &mut Request<B>) -> Result<(), CasingError> {
    let Some(wanted) = req.extensions_mut().remove::<ConfiguredCasing>() else {
        return Ok(());
    };
    // Owned copy of the head: the body type need not be `Sync` to cross the awaits below.
    let mut probe = Request::builder()
        .method(req.method().clone())
        .uri(req.uri().path_and_query().map_or("/", |p| p.as_str()))
        .body(Empty::<Bytes>::new())?;
    *probe.headers_mut() = req.headers().clone();
    *probe.extensions_mut() = req.extensions().clone();
    let head = encode_head(probe).await?;
    let rewritten = rewrite_names(&head, &wanted.0);
    let parsed_ext = parse_head(rewritten).await?;
    let mut ext = std::mem::take(req.extensions_mut());
    // Later inserts win: the parsed casing record replaces the client's.
    ext.extend(parsed_ext);
    *req.extensions_mut() = ext;
    Ok(())
}

/// The request head as hyper would write it (client's casing preserved).
async fn encode_head(mut probe: Request<Empty<Bytes>>) -> Result<Vec<u8>, CasingError> {
    // Framing headers would make hyper wait for a body; they are irrelevant to casing.
    probe.headers_mut().remove(http::header::CONTENT_LENGTH);
    probe.headers_mut().remove(http::header::TRANSFER_ENCODING);
    let (client_io, mut server_io) = tokio::io::duplex(64 * 1024);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(client_io))
        .await?;
    let driver = tokio::spawn(conn);
    let send = tokio::spawn(async move { sender.send_request(probe).await });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = server_io.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    send.abort();
    driver.abort();
    Ok(buf)
}

/// Replaces header names (case-insensitively) with the wanted spelling.
fn rewrite_names(head: &[u8], wanted: &[String]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        match line.split_once(':') {
            Some((name, rest)) if i > 0 => {
                let n = wanted
                    .iter()
                    .find(|w| w.eq_ignore_ascii_case(name))
                    .map_or(name, String::as_str);
                out.push_str(n);
                out.push(':');
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// Parses a request head with hyper and returns the parsed request's extensions.
async fn parse_head(head: Vec<u8>) -> Result<http::Extensions, CasingError> {
    let (mut client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        if let Ok(mut g) = tx.lock()
            && let Some(tx) = g.take()
        {
            let _ = tx.send(req.into_parts().0.extensions);
        }
        async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
    });
    let server = tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .serve_connection(TokioIo::new(server_io), svc)
            .await;
    });
    client_io.write_all(&head).await?;
    let ext = rx.await.map_err(|_| CasingError::Unparsed);
    server.abort();
    ext
}

/// Whether a header name is one the request carries (helper for transforms).
pub fn has_header<B>(req: &Request<B>, name: &HeaderName) -> bool {
    req.headers().contains_key(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configured_casing_survives_and_others_keep_theirs() {
        // A request as the agent's server would hand it over (client casing recorded).
        let head = b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-Client-Case: 1\r\nx-api-key: placeholder\r\n\r\n".to_vec();
        let ext = parse_head(head).await.unwrap();
        let mut req = Request::builder().uri("/x").body(()).unwrap();
        req.headers_mut().insert("host", "a.test".parse().unwrap());
        req.headers_mut()
            .insert("x-client-case", "1".parse().unwrap());
        req.headers_mut()
            .insert("x-api-key", "real".parse().unwrap());
        *req.extensions_mut() = ext;
        ConfiguredCasing::insert(&mut req, "X-API-Key");
        apply(&mut req).await.unwrap();
        let mut probe = Request::builder()
            .uri("/x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        *probe.headers_mut() = req.headers().clone();
        *probe.extensions_mut() = req.extensions().clone();
        let out = String::from_utf8(encode_head(probe).await.unwrap()).unwrap();
        assert!(out.contains("\r\nX-API-Key: real\r\n"), "{out}");
        assert!(out.contains("\r\nX-Client-Case: 1\r\n"), "{out}");
        assert!(out.contains("\r\nHost: a.test\r\n"), "{out}");
    }
}
