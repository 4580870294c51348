//! Inside an open tunnel: the first byte decides who serves it. TLS goes to the MITM server
//! (or the sni-only passthrough), plain HTTP to the HTTP server; both give every inner request
//! the full pipeline. Anything else is closed and audited.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Target;
use super::prefixed::Prefixed;
use crate::audit::{AuditRecord, PendingAudit};
use crate::outcome::{self, Outcome, Refusal};
use crate::proxy::{ConnInfo, Runtime, server};
use crate::sni;
use crate::transform::Mode;

/// A tunnel that stays silent this long after setup is closed.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// TLS record type of a handshake message: every ClientHello starts with it.
const TLS_HANDSHAKE: u8 = 0x16;

/// Longest HTTP method the sniffer waits for (`PROPFIND`, `M-SEARCH` and friends fit).
const MAX_METHOD: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tls,
    Http,
    Other,
}

/// What a stream starting with `bytes` speaks; `None` while it cannot tell yet. HTTP is an
/// upper-case method token followed by a space (so `SSH-2.0-…` is not HTTP).
pub fn classify(bytes: &[u8]) -> Option<Kind> {
    let first = *bytes.first()?;
    if first == TLS_HANDSHAKE {
        return Some(Kind::Tls);
    }
    let is_token = |b: &u8| b.is_ascii_uppercase() || matches!(b, b'-' | b'_');
    let token = bytes.iter().take_while(|b| is_token(b)).count();
    match bytes.get(token) {
        Some(b' ') if token > 0 => Some(Kind::Http),
        None if token < MAX_METHOD => None,
        _ => Some(Kind::Other),
    }
}

pub async fn serve_inner(
    rt: Arc<Runtime>,
    mut io: Prefixed<TcpStream>,
    mut conn: ConnInfo,
    target: Target,
    shutdown: CancellationToken,
) {
    let peeked = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(
            FIRST_BYTES_TIMEOUT,
            io.peek_until(MAX_METHOD + 1, |b| classify(b).is_some()),
        ) => r,
    };
    let kind = match peeked {
        Ok(Ok([])) => return, // closed before sending anything: nothing to answer
        Ok(Ok(bytes)) => classify(bytes).unwrap_or(Kind::Other),
        Ok(Err(e)) => {
            tracing::debug!(client = %conn.client(), error = %e, "tunnel read failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %conn.client(), "tunnel idle after setup, closing");
            return;
        }
    };
    match kind {
        Kind::Tls if rt.mode == Mode::SniOnly => {
            let route = sni::Route {
                fallback_host: Some(target.host),
                port: target.port,
            };
            sni::passthrough(rt, io, conn, route, shutdown).await;
        }
        Kind::Tls => {
            // No SNI (an IP-literal target): the leaf names the tunnel's target.
            let hs = tokio::time::timeout(
                server::TLS_HANDSHAKE_TIMEOUT,
                server::tls_accept(&rt, io, Some(target.host.into_string())),
            )
            .await;
            match hs {
                Ok(Ok((tls, sni))) => {
                    conn.tls = true;
                    conn.sni = sni;
                    server::serve_conn(rt, tls, conn, shutdown).await;
                }
                Ok(Err(reason)) => {
                    tracing::debug!(client = %conn.client(), reason = %reason, "tls handshake in tunnel failed")
                }
                Err(_) => {
                    tracing::debug!(client = %conn.client(), "tls handshake in tunnel timed out")
                }
            }
        }
        Kind::Http => server::serve_conn(rt, io, conn, shutdown).await,
        Kind::Other => unsupported(&rt, &conn, &target),
    }
}

/// Neither TLS nor HTTP: the connection is dropped, and the record says why.
fn unsupported(rt: &Runtime, conn: &ConnInfo, target: &Target) {
    let mut record = AuditRecord {
        host: target.authority(),
        remote_addr: conn.client().to_string(),
        mode: rt.mode.as_str(),
        protocol: "unknown",
        ..AuditRecord::default()
    };
    conn.describe(&mut record, rt.users.as_ref());
    let audit = PendingAudit::new(record, rt.audit.clone());
    outcome::finish(audit, Outcome::Refused(Refusal::TunnelProtocolUnsupported));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(classify(b"\x16\x03\x01"), Some(Kind::Tls));
        assert_eq!(classify(b"GET / HTTP/1.1"), Some(Kind::Http));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Kind::Http));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Kind::Other));
        assert_eq!(classify(b"\x00\x01"), Some(Kind::Other));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Kind::Other));
        assert_eq!(classify(&[b'A'; 40]), Some(Kind::Other));
    }
}
