//! HTTP CONNECT: read the request head (httparse), name the target, answer 200 or 403.
//!
//! A first request that is not CONNECT (an `HTTP_PROXY` client sending `GET http://…`) is not
//! an error: the connection is handed to the plain HTTP server, which accepts absolute-form.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{HandshakeError, Refusal, Target};

/// Largest CONNECT request head accepted (request line plus headers).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

pub const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";
pub const FORBIDDEN: &[u8] =
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// Managed mode before the first sync, or past a connection limit.
pub const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What the first request on the connection turned out to be.
pub enum Request {
    /// `CONNECT host:port`; `rest` is whatever the client sent after the head.
    Connect { target: Target, rest: Bytes },
    /// Some other method: everything read so far, to be replayed to the HTTP server.
    Other { buffered: Bytes },
}

/// Answers 400 and returns the refusal to audit. A failed write is not an error of its own:
/// the refusal was decided either way.
async fn bad_request<S: AsyncWrite + Unpin>(
    io: &mut S,
    reason: &'static str,
    detail: String,
) -> HandshakeError {
    let _ = io.write_all(BAD_REQUEST).await;
    HandshakeError::Refused(Refusal {
        reason,
        status: 400,
        target: None,
        detail,
    })
}

/// Reads one request head. A CONNECT without a usable target, or a head over the size cap,
/// gets a 400 and [`HandshakeError::Refused`]; bytes that are not HTTP get no answer.
pub async fn read_request<S>(io: &mut S) -> Result<Request, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if req.method != Some("CONNECT") {
                    return Ok(Request::Other {
                        buffered: Bytes::from(buf),
                    });
                }
                let target = req.path.and_then(parse_target);
                let Some(target) = target else {
                    let detail = format!(
                        "CONNECT target {:?} is not host:port",
                        req.path.unwrap_or("")
                    );
                    return Err(bad_request(io, "malformed_connect", detail).await);
                };
                let rest = Bytes::from(buf).slice(len..);
                return Ok(Request::Connect { target, rest });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                let detail = format!("request head over {MAX_HEAD} bytes");
                return Err(bad_request(io, "connect_head_too_large", detail).await);
            }
            Err(e) => {
                // Not HTTP at all: no answer, as for a failed TLS handshake.
                return Err(HandshakeError::Malformed(e.to_string()));
            }
        }
    }
}

/// Authority-form target (`host:port`, `[v6]:port`); without a port, 443.
fn parse_target(path: &str) -> Option<Target> {
    let auth: http::uri::Authority = path.parse().ok()?;
    if auth.as_str() != path || auth.as_str().contains('@') {
        return None;
    }
    Target::new(auth.host(), auth.port_u16().unwrap_or(443))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("Example.com:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 8443));
        assert_eq!(parse_target("example.com").unwrap().port, 443);
        let t = parse_target("[::1]:443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority().as_str()),
            ("::1", "[::1]:443")
        );
        assert!(parse_target("/path").is_none());
        assert!(parse_target("user@host:1").is_none());
    }

    #[tokio::test]
    async fn connect_keeps_bytes_after_the_head() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client
            .write_all(b"CONNECT a.test:8443 HTTP/1.1\r\nHost: a.test:8443\r\n\r\n\x16\x03\x01")
            .await
            .unwrap();
        match read_request(&mut server).await.unwrap() {
            Request::Connect { target, rest } => {
                assert_eq!(target.authority(), "a.test:8443");
                assert_eq!(&rest[..], b"\x16\x03\x01");
            }
            Request::Other { .. } => panic!("not CONNECT"),
        }
    }

    #[tokio::test]
    async fn other_methods_are_replayed() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let head = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";
        client.write_all(head).await.unwrap();
        match read_request(&mut server).await.unwrap() {
            Request::Other { buffered } => assert_eq!(&buffered[..], head),
            Request::Connect { .. } => panic!("CONNECT?"),
        }
    }

    async fn refusal(client_bytes: &[u8]) -> (HandshakeError, String) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(client_bytes).await.unwrap();
        let err = match read_request(&mut server).await {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        drop(server);
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        (err, out)
    }

    #[tokio::test]
    async fn refusals_name_their_reason() {
        let (e, out) = refusal(b"CONNECT /x HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(
            matches!(&e, HandshakeError::Refused(r) if r.reason == "malformed_connect" && r.status == 400 && r.target.is_none()),
            "{e:?}"
        );

        let mut big = b"CONNECT a.test:443 HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        let (e, out) = refusal(&big).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(
            matches!(&e, HandshakeError::Refused(r) if r.reason == "connect_head_too_large"),
            "{e:?}"
        );

        // Not HTTP: no answer, nothing to audit.
        let (e, out) = refusal(b"\x16\x03\x01\x00\x00\r\n\r\n").await;
        assert_eq!(out, "");
        assert!(matches!(e, HandshakeError::Malformed(_)), "{e:?}");
    }
}
