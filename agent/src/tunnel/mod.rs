//! The tunnel listener (`proxy.tunnel_listen`): HTTP CONNECT and SOCKS5 on one port.
//!
//! Per connection, in order: the first byte picks the protocol ([`socks5`] on `0x05`, else
//! [`connect`]), which names the requested `host:port`; [`setup`] lets the connection's
//! [`crate::policy::Policy`] judge that destination (decision 9: host and port only) and writes
//! the setup's one audit record; the
//! client gets its success or refusal reply; then [`sniff`] looks at the first bytes inside the
//! tunnel and hands them to the MITM TLS server, the sni-only passthrough, or the plain HTTP
//! server, so every inner request runs the full pipeline. Anything else is closed and audited.

pub mod connect;
pub mod prefixed;
pub mod setup;
pub mod sniff;
pub mod socks5;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::record::TunnelAudit;
use crate::identify::HostName;
use crate::proxy::{ConnInfo, Runtime, TunnelInfo, server};
use prefixed::Prefixed;

/// The whole handshake (request and reply) must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client closed the connection during the handshake")]
    Closed,
    /// Not answered: the bytes are not a handshake the agent can reply to.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// Answered with the protocol's refusal; audited by [`setup::refuse`].
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A handshake the agent answered with a refusal before any destination was judged.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    /// Audit `reason` (`malformed_connect`, `socks5_no_acceptable_method`, ...).
    pub reason: &'static str,
    /// Audit `status_code`: the HTTP status sent, or 403 for a SOCKS5 refusal (as for a
    /// denied SOCKS5 setup: SOCKS has no HTTP status).
    pub status: u16,
    /// The requested destination, when the handshake got far enough to name one.
    pub target: Option<Target>,
    /// For the debug log.
    pub detail: String,
}

/// Which tunnel protocol the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Connect,
    Socks5,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Connect => "connect",
            Protocol::Socks5 => "socks5",
        }
    }
}

/// What the client asked the tunnel for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Normalised host name or IP literal, without brackets.
    pub host: HostName,
    pub port: u16,
}

impl Target {
    /// `None` when `host` is empty or not a plausible host name.
    pub fn new(host: &str, port: u16) -> Option<Self> {
        let host = HostName::new(host);
        let plausible = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        plausible.then_some(Self { host, port })
    }

    /// `host:port`, IPv6 in brackets (audit `host` and `tunnel.target`).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    server::accept_each(
        "tunnel",
        rt,
        listener,
        tracker,
        shutdown,
        |rt, stream, peer, shutdown| {
            // Not a redirect target: in eBPF mode the peer's uid picks the identity.
            let conn = server::accepted_direct(&rt, &stream, peer);
            handle(rt, stream, conn, shutdown)
        },
    )
    .await;
}

/// Where the handshake left the connection.
enum Opened {
    Tunnel {
        target: Target,
        protocol: Protocol,
        rest: bytes::Bytes,
        /// The setup's traces, repeated on every inner request's record.
        traces: Vec<crate::audit::Trace>,
    },
    /// Not a CONNECT: an `HTTP_PROXY`-style request to serve as the HTTP listener would.
    PlainProxy { buffered: bytes::Bytes },
}

async fn handle(
    rt: Arc<Runtime>,
    mut stream: TcpStream,
    conn: ConnInfo,
    shutdown: CancellationToken,
) {
    let peer = conn.client();
    if let Some(hit) = conn.over_limit {
        // Past a connection limit: the handshake is answered 503 (SOCKS5: general failure)
        // without being read as a destination request, and audited as a refused setup.
        refuse_over_limit(&rt, &mut stream, &conn, hit).await;
        return;
    }
    let opened = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, open(&rt, &mut stream, &conn)) => r,
    };
    match opened {
        Ok(Ok(Some(Opened::Tunnel {
            target,
            protocol,
            rest,
            traces,
        }))) => {
            let info = TunnelInfo {
                port: target.port,
                audit: TunnelAudit {
                    target: target.authority(),
                    protocol: protocol.as_str(),
                    request_transforms: traces,
                },
            };
            let conn = ConnInfo {
                tunnel: Some(info),
                ..conn
            };
            let io = Prefixed::new(rest, stream);
            sniff::serve_inner(rt, io, conn, target, shutdown).await;
        }
        Ok(Ok(Some(Opened::PlainProxy { buffered }))) => {
            server::serve_conn(rt, Prefixed::new(buffered, stream), conn, shutdown).await;
        }
        Ok(Ok(None)) => {} // refused and audited
        Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "tunnel handshake failed"),
        Err(_) => tracing::debug!(client = %peer, "tunnel handshake timed out"),
    }
}

async fn refuse_over_limit(
    rt: &Runtime,
    stream: &mut TcpStream,
    conn: &ConnInfo,
    hit: crate::proxy::limits::LimitHit,
) {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    let protocol = match peeked {
        Ok(Ok(1)) if first[0] == socks5::VERSION => Protocol::Socks5,
        Ok(Ok(1)) => Protocol::Connect,
        _ => return, // nothing asked, nothing answered
    };
    let reply: &[u8] = match protocol {
        Protocol::Connect => connect::UNAVAILABLE,
        // Version 5, no acceptable method: the greeting is refused outright.
        Protocol::Socks5 => &[socks5::VERSION, 0xff],
    };
    // Read what the client sent first (one read: the head or greeting), so closing with it
    // unread does not reset the connection and lose the answer.
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read(&mut head)).await;
    let _ = stream.write_all(reply).await;
    let _ = stream.shutdown().await;
    let refusal = Refusal {
        reason: hit.reason(),
        status: 503,
        target: None,
        detail: "connection limit reached".into(),
    };
    setup::refuse(rt, conn, protocol, &refusal);
}

/// Reads the tunnel request, asks the pipeline, and answers. `None` = refused (audited).
async fn open(
    rt: &Runtime,
    stream: &mut TcpStream,
    conn: &ConnInfo,
) -> Result<Option<Opened>, HandshakeError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    let protocol = if first[0] == socks5::VERSION {
        Protocol::Socks5
    } else {
        Protocol::Connect
    };
    let read = match protocol {
        Protocol::Socks5 => socks5::read_request(stream)
            .await
            .map(|target| (target, bytes::Bytes::new())),
        Protocol::Connect => match connect::read_request(stream).await {
            Ok(connect::Request::Connect { target, rest }) => Ok((target, rest)),
            Ok(connect::Request::Other { buffered }) => {
                return Ok(Some(Opened::PlainProxy { buffered }));
            }
            Err(e) => Err(e),
        },
    };
    let (target, rest) = match read {
        Ok(r) => r,
        // The client got the protocol's refusal: that answer is audited like a denied setup.
        Err(HandshakeError::Refused(refusal)) => {
            tracing::debug!(client = %conn.client(), error = %refusal, "tunnel handshake refused");
            setup::refuse(rt, conn, protocol, &refusal);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let (verdict, traces) = setup::authorize(rt, conn, &target, protocol);
    let allowed = verdict == setup::Verdict::Open;
    match (protocol, verdict) {
        (Protocol::Connect, setup::Verdict::Open) => stream.write_all(connect::ESTABLISHED).await?,
        (Protocol::Connect, setup::Verdict::Denied) => stream.write_all(connect::FORBIDDEN).await?,
        (Protocol::Connect, setup::Verdict::NotReady) => {
            stream.write_all(connect::UNAVAILABLE).await?
        }
        (Protocol::Socks5, setup::Verdict::Open) => {
            socks5::reply(stream, socks5::Reply::Succeeded).await?
        }
        (Protocol::Socks5, _) => socks5::reply(stream, socks5::Reply::NotAllowed).await?,
    }
    Ok(allowed.then_some(Opened::Tunnel {
        target,
        protocol,
        rest,
        traces,
    }))
}
