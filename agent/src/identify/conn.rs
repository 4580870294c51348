//! Identify, connection level: for an accepted connection, where it was going (eBPF redirect)
//! and who opened it, and so which identity profile judges its requests, or that it is refused.
//!
//! In eBPF mode the kernel records every connection a governed (or exempt) task opens to the
//! agent: redirected ones with their original destination, direct ones (the task dialled an
//! agent listener itself) flagged as such. A peer the kernel did not record cannot be
//! identified and is refused rather than given the top-level pipeline.

use std::net::IpAddr;
use std::sync::Arc;

use super::addr::{ClientAddr, LocalAddr};
use super::ids::{PolicyId, Uid};
use super::origin::{ConnOrigin, OrigDstLookup, PeerMode, Route};

/// Why a connection is refused before any policy runs (eBPF mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    /// A `deny` identity connected to an agent listener directly.
    DeniedIdentity,
    /// The kernel recorded no identity for the peer.
    Unidentified,
    /// The kernel's record names a policy id the config in force does not have (a socket
    /// recorded before a reload that removed its `intercept.policies` entry).
    UnknownPolicy,
    /// Managed mode: no config has been synced from the control plane yet (503).
    NotReady,
}

impl PeerRefusal {
    /// The audit `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            PeerRefusal::DeniedIdentity => "identity_denied",
            PeerRefusal::Unidentified => "unidentified_peer",
            PeerRefusal::UnknownPolicy => "unknown_policy",
            PeerRefusal::NotReady => "not_ready",
        }
    }
}

/// What the agent knows about who opened a connection.
#[derive(Debug, Clone)]
pub struct ConnIdentity {
    pub client: ClientAddr,
    /// Original destination and identity of a redirected connection.
    pub origin: Option<ConnOrigin>,
    /// eBPF mode, not redirected: the kernel's record of the task that connected directly
    /// (its `orig_dst` is the agent's own listener).
    pub peer: Option<ConnOrigin>,
    /// The identity profile whose policy and transforms judge this connection.
    pub policy_id: PolicyId,
    /// Set when the connection must be refused whatever it asks for.
    pub refused: Option<PeerRefusal>,
}

impl ConnIdentity {
    /// A connection nothing more is known about (no eBPF mode).
    pub fn anonymous(client: ClientAddr) -> Self {
        Self {
            client,
            origin: None,
            peer: None,
            policy_id: PolicyId::DEFAULT,
            refused: None,
        }
    }

    /// The kernel's record of the connecting task, redirected or direct (eBPF mode only).
    pub fn task(&self) -> Option<&ConnOrigin> {
        self.origin.as_ref().or(self.peer.as_ref())
    }

    /// The workload's uid, redirected or not (eBPF mode only).
    pub fn uid(&self) -> Option<Uid> {
        self.task().map(|o| o.uid)
    }

    /// The IP the workload really connected to, for a redirected connection.
    pub fn dest_ip(&self) -> Option<IpAddr> {
        self.origin.as_ref().map(|o| o.orig_dst.ip())
    }
}

/// The connection-level identify step, built once at startup.
#[derive(Default)]
pub struct ConnIdentifier {
    /// The kernel's records (eBPF mode).
    origins: Option<Arc<dyn OrigDstLookup>>,
}

impl ConnIdentifier {
    /// No eBPF mode: every connection is anonymous and judged by the top-level profile.
    pub fn off() -> Self {
        Self { origins: None }
    }

    /// eBPF mode: every connection is looked up in the kernel's records.
    pub fn ebpf(origins: Arc<dyn OrigDstLookup>) -> Self {
        Self {
            origins: Some(origins),
        }
    }

    /// A connection accepted on a listener the redirect targets (HTTP, HTTPS).
    pub fn redirected(&self, client: ClientAddr, local: Option<LocalAddr>) -> ConnIdentity {
        self.identify(client, local)
    }

    /// A connection the redirect never sends (the tunnel listener): identified the same way,
    /// from the kernel's record of the direct connection.
    pub fn direct(&self, client: ClientAddr, local: Option<LocalAddr>) -> ConnIdentity {
        self.identify(client, local)
    }

    fn identify(&self, client: ClientAddr, local: Option<LocalAddr>) -> ConnIdentity {
        let Some(lookup) = &self.origins else {
            return ConnIdentity::anonymous(client);
        };
        let record = local.and_then(|local| lookup.lookup(client, local));
        let mut id = ConnIdentity::anonymous(client);
        let Some(o) = record else {
            id.refused = Some(PeerRefusal::Unidentified);
            return id;
        };
        match o.route {
            Route::Redirected => {
                id.policy_id = o.policy_id;
                id.origin = Some(o);
            }
            Route::Direct(mode) => {
                match mode {
                    PeerMode::Governed => id.policy_id = o.policy_id,
                    PeerMode::Exempt => {}
                    PeerMode::Denied => id.refused = Some(PeerRefusal::DeniedIdentity),
                }
                id.peer = Some(o);
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{CgroupId, MockOrigDst};

    fn client() -> ClientAddr {
        ClientAddr("127.0.0.1:40000".parse().unwrap())
    }

    fn local() -> LocalAddr {
        LocalAddr("127.0.0.1:15080".parse().unwrap())
    }

    fn origin(uid: u32, policy: u32, route: Route) -> ConnOrigin {
        ConnOrigin {
            orig_dst: "192.0.2.10:80".parse().unwrap(),
            uid: Uid(uid),
            pid: 4242,
            comm: "curl".into(),
            policy_id: PolicyId(policy),
            cgroup_id: CgroupId(7),
            route,
        }
    }

    fn identifier(mock: Arc<MockOrigDst>) -> ConnIdentifier {
        ConnIdentifier::ebpf(mock)
    }

    #[test]
    fn a_redirected_connection_takes_its_origin_and_kernel_policy() {
        let mock = Arc::new(MockOrigDst::default());
        let o = origin(1000, 3, Route::Redirected);
        mock.insert(client(), local(), o.clone());
        let id = identifier(mock).redirected(client(), Some(local()));
        assert_eq!(id.origin, Some(o));
        assert_eq!(id.uid(), Some(Uid(1000)));
        assert_eq!(id.policy_id, PolicyId(3));
        assert_eq!(id.dest_ip(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(id.refused, None);
    }

    #[test]
    fn each_connection_is_looked_up_once_and_an_unknown_peer_is_refused() {
        let mock = Arc::new(MockOrigDst::default());
        mock.insert(client(), local(), origin(1000, 3, Route::Redirected));
        let ident = identifier(mock);
        assert!(ident.redirected(client(), Some(local())).origin.is_some());
        let again = ident.redirected(client(), Some(local()));
        assert!(again.origin.is_none());
        assert_eq!(again.refused, Some(PeerRefusal::Unidentified));
        assert_eq!(again.uid(), None);
        // Without a local address nothing can be looked up either.
        let none = ident.direct(client(), None);
        assert_eq!(none.refused, Some(PeerRefusal::Unidentified));
    }

    #[test]
    fn client_and_local_are_not_interchangeable() {
        let mock = Arc::new(MockOrigDst::default());
        mock.insert(client(), local(), origin(1000, 3, Route::Redirected));
        let swapped = ClientAddr(local().0);
        let id = identifier(mock).redirected(swapped, Some(LocalAddr(client().0)));
        assert!(id.origin.is_none());
        assert_eq!(id.refused, Some(PeerRefusal::Unidentified));
    }

    #[test]
    fn a_direct_peer_gets_exactly_its_own_kernel_policy() {
        let mock = Arc::new(MockOrigDst::default());
        let ident = identifier(mock.clone());
        // Governed: the policy the kernel recorded (a cgroup-bound policy included).
        mock.insert(
            client(),
            local(),
            origin(1001, 2, Route::Direct(PeerMode::Governed)),
        );
        let id = ident.direct(client(), Some(local()));
        assert_eq!(id.uid(), Some(Uid(1001)));
        assert_eq!(id.policy_id, PolicyId(2));
        assert!(
            id.dest_ip().is_none(),
            "a direct peer has no original destination"
        );
        assert_eq!(id.refused, None);
        // Denied: refused, never the top-level pipeline.
        mock.insert(
            client(),
            local(),
            origin(1002, 0, Route::Direct(PeerMode::Denied)),
        );
        let id = ident.redirected(client(), Some(local()));
        assert_eq!(id.refused, Some(PeerRefusal::DeniedIdentity));
        assert_eq!(id.uid(), Some(Uid(1002)));
        // Exempt: the top-level pipeline.
        mock.insert(
            client(),
            local(),
            origin(0, 5, Route::Direct(PeerMode::Exempt)),
        );
        let id = ident.direct(client(), Some(local()));
        assert_eq!((id.policy_id, id.refused), (PolicyId::DEFAULT, None));
    }

    #[test]
    fn without_ebpf_every_connection_is_anonymous() {
        let ident = ConnIdentifier::off();
        for id in [
            ident.redirected(client(), Some(local())),
            ident.direct(client(), Some(local())),
        ] {
            assert!(id.origin.is_none());
            assert_eq!(id.uid(), None);
            assert_eq!(id.policy_id, PolicyId::DEFAULT);
            assert_eq!(id.refused, None);
        }
    }
}
