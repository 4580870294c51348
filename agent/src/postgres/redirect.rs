//! eBPF mode: a governed workload that connects to a configured upstream's address is sent to
//! the proxy listener by the kernel, so clients keep their usual host name (`db.internal:5432`).
//! Only the configured database destinations are redirected; every other port stays denied.
//! The entries are computed when the listener starts or is reconfigured, from the DSNs readable
//! and the addresses their hosts resolve to at that moment; a DSN refreshed later (its secret's
//! `ttl`) or readable only later changes them at the next reconfiguration (docs/postgres.md).

use std::net::SocketAddr;

use super::dsn::Dsn;
use super::listener::Generation;
use std::sync::Arc;

use crate::ebpf::{AgentPort, DbRedirectTable, Interceptor, PortGroup};
use crate::resolve::Resolver;

/// The kernel table of database destinations.
pub trait DbRedirects: Send + Sync {
    /// Replaces the whole set: TCP connects to any of `dests` go to `listener`
    /// (`None` or an empty set: no database destination is redirected).
    fn set(&self, listener: Option<SocketAddr>, dests: &[SocketAddr]) -> Result<(), String>;
}

impl DbRedirects for DbRedirectTable {
    fn set(&self, listener: Option<SocketAddr>, dests: &[SocketAddr]) -> Result<(), String> {
        let Some(listener) = listener else {
            return self.replace((None, None), &[]).map_err(|e| e.to_string());
        };
        let targets = crate::ebpf::listener_targets(listener);
        self.replace(targets, dests).map_err(|e| e.to_string())
    }
}

/// eBPF mode: the kernel tables that follow the listener, its database redirects and its
/// entry in the agent-port table (a direct peer is then identified by the kernel, and governed
/// tasks cannot bind the port).
pub struct KernelTables {
    pub redirects: DbRedirectTable,
    pub interceptor: Arc<Interceptor>,
}

impl DbRedirects for KernelTables {
    fn set(&self, listener: Option<SocketAddr>, dests: &[SocketAddr]) -> Result<(), String> {
        let port: Vec<AgentPort> = listener
            .map(|a| AgentPort::Tcp(a.port()))
            .into_iter()
            .collect();
        self.interceptor
            .set_agent_ports(PortGroup::Postgres, &port)
            .map_err(|e| e.to_string())?;
        self.redirects.set(listener, dests)
    }
}

/// The DSNs that can be read now, parsed.
fn dsns(shared: &Generation) -> Vec<Dsn> {
    shared
        .routes
        .values()
        .filter_map(|r| r.dsn.current().ok())
        .filter_map(|v| Dsn::parse(v.expose()).ok())
        .collect()
}

/// Every upstream host name (or address literal) the routes name.
pub fn upstream_hosts(shared: &Generation) -> Vec<String> {
    let mut hosts: Vec<String> = dsns(shared)
        .iter()
        .flat_map(|d| d.hosts.iter().map(|h| h.host.to_ascii_lowercase()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Every address:port the routes' upstreams resolve to now.
pub async fn destinations(shared: &Generation, resolver: &Resolver) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for dsn in dsns(shared) {
        for hp in &dsn.hosts {
            match resolver.lookup_ip(&hp.host).await {
                Ok(ips) => out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, hp.port))),
                Err(e) => {
                    tracing::warn!(host = %hp.host, error = %e, "postgres: cannot resolve upstream for the eBPF redirect")
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
