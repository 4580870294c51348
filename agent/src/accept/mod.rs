//! Accept: bind listeners, run accept loops, and drain connections on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenAddr;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{listener} listen {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: String,
        source: std::io::Error,
    },
    /// The configured address does not parse (the config's own message).
    #[error("{listener} listen {addr}: {reason}")]
    Addr {
        listener: &'static str,
        addr: String,
        reason: String,
    },
}

/// Binds a TCP listener and logs `{"msg":"listening","listener":..,"addr":..}` with the bound
/// address (tests and tools rely on it when the port is 0).
pub async fn bind_tcp(listener: &'static str, addr: &ListenAddr) -> Result<TcpListener, BindError> {
    let sa = socket_addr(listener, addr)?;
    let l = TcpListener::bind(sa)
        .await
        .map_err(|e| bind_err(listener, addr, e))?;
    log_listening(listener, l.local_addr().ok());
    Ok(l)
}

/// Binds the DNS sockets: UDP and TCP on the same address (the TCP port follows the UDP one
/// when the configured port is 0).
pub async fn bind_dns(addr: &ListenAddr) -> Result<(UdpSocket, TcpListener), BindError> {
    let sa = socket_addr("dns", addr)?;
    // With port 0 the kernel picks a free UDP port, which a TCP socket may already hold:
    // pick again a bounded number of times rather than fail startup on bad luck.
    let attempts = if sa.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(sa)
            .await
            .map_err(|e| bind_err("dns", addr, e))?;
        let bound = udp.local_addr().map_err(|e| bind_err("dns", addr, e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => {
                log_listening("dns", Some(bound));
                return Ok((udp, tcp));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(bind_err("dns", addr, e)),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse));
    Err(bind_err("dns", addr, e))
}

fn socket_addr(listener: &'static str, addr: &ListenAddr) -> Result<SocketAddr, BindError> {
    addr.socket_addr().map_err(|reason| BindError::Addr {
        listener,
        addr: addr.to_string(),
        reason,
    })
}

fn bind_err(listener: &'static str, addr: &ListenAddr, source: std::io::Error) -> BindError {
    BindError::Bind {
        listener,
        addr: addr.to_string(),
        source,
    }
}

fn log_listening(listener: &'static str, addr: Option<SocketAddr>) {
    let addr = addr.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(target: crate::telemetry::STARTUP, listener, addr = %addr, "listening");
}

/// Runs an accept loop until `shutdown`, spawning `serve(stream, peer, shutdown)` per
/// connection on `tracker` so the caller can wait for them to drain.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tracker.spawn(serve(stream, peer, shutdown.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
