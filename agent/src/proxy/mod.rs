//! The proxy proper: for one request, run the stages in order
//! (identify → pipeline → upstream → response pipeline → audit) and answer the client.

pub mod audited_body;
mod first_byte;
pub mod handler;
pub mod header_case;
pub mod headers;
pub mod respond;
pub mod server;
pub mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::{AuditRecord, AuditSink};
use crate::ebpf::{ConnOrigin, OrigDstLookup};
use crate::resolve::Resolver;
use crate::tls::LeafCache;
use crate::transform::{Mode, PipelineSet};
use crate::upstream::{Connector, UpstreamClient};

/// Everything a request needs, built once at startup. The pipeline is a swappable snapshot.
pub struct Runtime {
    pub pipelines: ArcSwap<PipelineSet>,
    /// Original destinations of redirected connections (eBPF mode).
    pub origins: Option<Arc<dyn OrigDstLookup>>,
    /// eBPF mode: policy id by uid, for governed workloads that connect to a listener directly
    /// instead of through the redirect (they still get their own identity's pipeline).
    pub direct_uid_policy: Option<std::collections::HashMap<u32, u32>>,
    pub resolver: Arc<Resolver>,
    pub upstream: UpstreamClient,
    /// Raw dials (sni-only passthrough), with the same deny-CIDR checks as `upstream`.
    pub connector: Connector,
    pub audit: Arc<AuditSink>,
    /// The passwd database, resolved at startup, for the audit record's `user`.
    pub users: Arc<crate::app::identity::Users>,
    /// Present in MITM mode.
    pub leaf_cache: Option<Arc<LeafCache>>,
    pub mode: Mode,
    pub request_body_limit: Option<u64>,
    pub response_body_limit: Option<u64>,
    /// Open WebSockets (closed and audited at shutdown).
    pub websockets: websocket::Relays,
}

/// What is known about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    /// TLS server name from the ClientHello.
    pub sni: Option<String>,
    /// Original destination and identity of a redirected connection.
    pub origin: Option<ConnOrigin>,
    /// eBPF mode, not redirected: the uid owning the client socket.
    pub peer_uid: Option<u32>,
    /// The user name of [`ConnInfo::uid`], looked up once per connection.
    pub user: Option<Arc<str>>,
    /// The host whose address already matched this connection's original destination.
    pub verified_host: parking_lot::Mutex<Option<String>>,
    /// Set when the connection runs inside a CONNECT or SOCKS5 tunnel.
    pub tunnel: Option<crate::tunnel::TunnelInfo>,
}

impl ConnInfo {
    /// A connection as accepted: no TLS and no tunnel yet.
    pub fn accepted(client: SocketAddr, origin: Option<ConnOrigin>, peer_uid: Option<u32>) -> Self {
        Self {
            client,
            tls: false,
            sni: None,
            origin,
            peer_uid,
            user: None,
            verified_host: Default::default(),
            tunnel: None,
        }
    }

    /// Resolves the user name of the connection's uid from the in-memory table.
    pub fn with_user(mut self, users: &Arc<crate::app::identity::Users>) -> Self {
        self.user = self.uid().and_then(|uid| users.name_of(uid));
        self
    }

    pub fn dest_ip(&self) -> Option<IpAddr> {
        self.origin.as_ref().map(|o| o.orig_dst.ip())
    }

    pub fn is_verified(&self, host: &str) -> bool {
        self.verified_host.lock().as_deref() == Some(host)
    }

    pub fn set_verified(&self, host: &str) {
        let mut v = self.verified_host.lock();
        if v.as_deref() != Some(host) {
            *v = Some(host.to_string());
        }
    }

    /// The workload's uid, redirected or not (eBPF mode only).
    pub fn uid(&self) -> Option<u32> {
        self.origin.as_ref().map(|o| o.uid).or(self.peer_uid)
    }

    /// Which identity's pipeline judges this connection (0 = the top-level one).
    pub fn policy_id(&self, rt: &Runtime) -> u32 {
        match (&self.origin, self.peer_uid, &rt.direct_uid_policy) {
            (Some(o), _, _) => o.policy_id,
            (None, Some(uid), Some(map)) => map.get(&uid).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// Fills the audit fields that come from the connection: identity and tunnel.
    pub fn describe(&self, rec: &mut AuditRecord) {
        if let Some(uid) = self.uid() {
            rec.uid = Some(uid);
            rec.user = self.user.as_deref().map(str::to_string);
        }
        if let Some(o) = &self.origin {
            rec.pid = Some(o.pid);
            rec.comm = Some(o.comm.clone());
            rec.orig_dst = Some(o.orig_dst.to_string());
        }
        rec.tunnel = self.tunnel.as_ref().map(|t| t.audit.clone());
    }
}
