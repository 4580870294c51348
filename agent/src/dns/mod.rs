//! The DNS server (UDP and TCP): intercepted names answer `proxy_ip`, passthrough names are
//! resolved for real, static records take precedence.
//!
//! Per question (names compare lower-cased, one trailing dot ignored):
//! 1. Static records: an `A` record answers `A` queries (other types: NODATA); a `CNAME` answers
//!    `CNAME` queries and, for every other type, is followed through the static records (at most
//!    [`handler::MAX_CNAME_CHAIN`] links) and then passthrough/interception of the final target.
//! 2. Passthrough globs: real `A`/`AAAA` answers from the shared [`Resolver`] (TTL 60); other types
//!    NODATA. NXDOMAIN upstream answers NXDOMAIN; a failed lookup (or one slower than
//!    [`PASSTHROUGH_DEADLINE`]) is logged and answers SERVFAIL.
//! 3. Interception: `A` answers `proxy_ip` (TTL 60); `AAAA`, `HTTPS`, `SVCB` and everything else
//!    get NODATA (NOERROR, empty, authoritative).

mod glob;
mod handler;
mod records;
mod server;

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::DnsConfig;
use crate::resolve::Resolver;

pub use glob::HostGlob;
pub use handler::{ANSWER_TTL, MAX_CNAME_CHAIN, PASSTHROUGH_DEADLINE};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns.proxy_ip is required when the DNS server is enabled")]
    MissingProxyIp,
    #[error("dns server: {0}")]
    Server(#[source] hickory_server::net::NetError),
}

/// Which names may resolve, in eBPF mode (where workloads connect to real addresses and the
/// kernel redirects them): names no policy could allow answer NXDOMAIN, so nothing leaks through
/// the agent's resolver.
pub trait NamePolicy: Send + Sync {
    fn may_allow(&self, host: &str) -> bool;
}

/// Serves DNS on the already-bound sockets until `shutdown` fires. With `names` (eBPF mode),
/// non-static names get real answers when a policy may allow them and NXDOMAIN otherwise;
/// without it, they are intercepted with `proxy_ip`.
pub async fn serve(
    cfg: DnsConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    resolver: Arc<Resolver>,
    names: Option<Arc<dyn NamePolicy>>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let interception = match names {
        Some(n) => handler::Interception::Policy(n),
        None => handler::Interception::ProxyIp(cfg.proxy_ip.ok_or(DnsError::MissingProxyIp)?),
    };
    let records = records::StaticRecords::new(&cfg.records);
    let handler =
        handler::DnsHandler::new(interception, records, &cfg.passthrough, resolver, metrics);
    server::run(handler, udp, tcp, shutdown).await
}

/// The request handler in interception mode without sockets, for the fuzz targets
/// (`crate::fuzzing`); `None` without `proxy_ip`.
#[doc(hidden)]
pub fn handler_for_fuzzing(
    cfg: &DnsConfig,
    resolver: Arc<Resolver>,
) -> Option<impl hickory_server::server::RequestHandler> {
    let ip = cfg.proxy_ip?;
    let records = records::StaticRecords::new(&cfg.records);
    let interception = handler::Interception::ProxyIp(ip);
    Some(handler::DnsHandler::new(
        interception,
        records,
        &cfg.passthrough,
        resolver,
        Arc::default(),
    ))
}
