//! What is known about the connection a request arrived on.

use std::net::IpAddr;

use parking_lot::Mutex;

use super::limits::{ConnPermit, LimitHit};
use crate::audit::AuditRecord;
use crate::audit::record::TunnelAudit;
use crate::identify::{ConnIdentity, HostName, PolicyId, Uid, UserNames};

#[derive(Debug)]
pub struct ConnInfo {
    /// Who opened it and where it was going (the identify step).
    pub identity: ConnIdentity,
    pub tls: bool,
    /// TLS server name from the ClientHello.
    pub sni: Option<String>,
    /// The host whose address already matched this connection's original destination.
    pub verified_host: Mutex<Option<HostName>>,
    /// Set when the connection runs inside a CONNECT or SOCKS5 tunnel.
    pub tunnel: Option<TunnelInfo>,
    /// The connection's slot under the connection limits, held while it is served.
    pub permit: Option<ConnPermit>,
    /// Set when a connection limit refused it: every request gets a 503.
    pub over_limit: Option<LimitHit>,
}

/// What connections inside a tunnel carry: the port inner requests go to and the audit group.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    pub port: u16,
    pub audit: TunnelAudit,
}

impl ConnInfo {
    /// A connection as accepted: no TLS and no tunnel yet.
    pub fn accepted(identity: ConnIdentity) -> Self {
        Self {
            identity,
            tls: false,
            sni: None,
            verified_host: Default::default(),
            tunnel: None,
            permit: None,
            over_limit: None,
        }
    }

    /// Takes a slot under `limits`, or records which limit refused the connection.
    pub fn limited(mut self, limits: &std::sync::Arc<super::limits::ConnLimits>) -> Self {
        match limits.acquire(super::limits::ClientKey::of(&self.identity)) {
            Ok(p) => self.permit = Some(p),
            Err(hit) => {
                tracing::warn!(client = %self.client(), reason = hit.reason(), "connection refused: limit reached");
                self.over_limit = Some(hit);
            }
        }
        self
    }

    /// The client's address, for logs and the audit record.
    pub fn client(&self) -> std::net::SocketAddr {
        self.identity.client.0
    }

    pub fn dest_ip(&self) -> Option<IpAddr> {
        self.identity.dest_ip()
    }

    pub fn uid(&self) -> Option<Uid> {
        self.identity.uid()
    }

    pub fn policy_id(&self) -> PolicyId {
        self.identity.policy_id
    }

    pub fn is_verified(&self, host: &HostName) -> bool {
        self.verified_host.lock().as_ref() == Some(host)
    }

    pub fn set_verified(&self, host: &HostName) {
        let mut v = self.verified_host.lock();
        if v.as_ref() != Some(host) {
            *v = Some(host.clone());
        }
    }

    /// Fills the audit fields that come from the connection: identity and tunnel.
    pub fn describe(&self, rec: &mut AuditRecord, users: &dyn UserNames) {
        if let Some(uid) = self.uid() {
            rec.uid = Some(uid.0);
            rec.user = users.name_of(uid);
        }
        if let Some(o) = self.identity.task() {
            rec.pid = Some(o.pid);
            rec.comm = Some(o.comm.clone());
        }
        if let Some(o) = &self.identity.origin {
            rec.orig_dst = Some(o.orig_dst.to_string());
        }
        rec.tunnel = self.tunnel.as_ref().map(|t| t.audit.clone());
    }
}
