//! Identify, connection level: for an accepted connection, where it was going (eBPF redirect)
//! and who opened it, and so which identity profile judges its requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::addr::{ClientAddr, LocalAddr};
use super::ids::{PolicyId, Uid};
use super::origin::{ConnOrigin, OrigDstLookup};
use super::peer;

/// What the agent knows about who opened a connection.
#[derive(Debug, Clone)]
pub struct ConnIdentity {
    pub client: ClientAddr,
    /// Original destination and identity of a redirected connection.
    pub origin: Option<ConnOrigin>,
    /// eBPF mode, not redirected: the uid owning the client socket.
    pub peer_uid: Option<Uid>,
    /// The identity profile whose policy and transforms judge this connection.
    pub policy_id: PolicyId,
}

impl ConnIdentity {
    /// A connection nothing more is known about (no eBPF mode).
    pub fn anonymous(client: ClientAddr) -> Self {
        Self {
            client,
            origin: None,
            peer_uid: None,
            policy_id: PolicyId::DEFAULT,
        }
    }

    /// The workload's uid, redirected or not (eBPF mode only).
    pub fn uid(&self) -> Option<Uid> {
        self.origin.as_ref().map(|o| o.uid).or(self.peer_uid)
    }

    /// The IP the workload really connected to, for a redirected connection.
    pub fn dest_ip(&self) -> Option<IpAddr> {
        self.origin.as_ref().map(|o| o.orig_dst.ip())
    }
}

/// How the uid of a direct (not redirected) local peer is found; `/proc/net/tcp` by default.
pub type PeerUidLookup = fn(ClientAddr, LocalAddr) -> Option<Uid>;

/// The connection-level identify step, built once at startup.
pub struct ConnIdentifier {
    /// Original destinations (eBPF mode).
    origins: Option<Arc<dyn OrigDstLookup>>,
    /// eBPF mode: the profile of each uid named by an `intercept.policies` entry, for governed
    /// workloads that connect to a listener directly instead of through the redirect. Swapped
    /// by a reload (a uid moved to another policy is judged by it from its next connection).
    direct: Option<ArcSwap<HashMap<Uid, PolicyId>>>,
    peer_uid: PeerUidLookup,
}

impl Default for ConnIdentifier {
    fn default() -> Self {
        Self::off()
    }
}

impl ConnIdentifier {
    /// No eBPF mode: every connection is anonymous and judged by the top-level profile.
    pub fn off() -> Self {
        Self {
            origins: None,
            direct: None,
            peer_uid: peer::loopback_peer_uid,
        }
    }

    /// eBPF mode: redirected connections are looked up in `origins`; direct ones by peer uid.
    pub fn ebpf(origins: Arc<dyn OrigDstLookup>, direct: HashMap<Uid, PolicyId>) -> Self {
        Self {
            origins: Some(origins),
            direct: Some(ArcSwap::from_pointee(direct)),
            peer_uid: peer::loopback_peer_uid,
        }
    }

    /// Reload: the new uid → profile map for direct connections (eBPF mode; no-op otherwise).
    pub fn set_direct(&self, map: HashMap<Uid, PolicyId>) {
        if let Some(d) = &self.direct {
            d.store(Arc::new(map));
        }
    }

    /// Replaces the `/proc` peer lookup (tests).
    pub fn with_peer_uid_lookup(mut self, lookup: PeerUidLookup) -> Self {
        self.peer_uid = lookup;
        self
    }

    /// A connection accepted on a listener the redirect targets (HTTP, HTTPS).
    pub fn redirected(&self, client: ClientAddr, local: Option<LocalAddr>) -> ConnIdentity {
        let origin = match (&self.origins, local) {
            (Some(lookup), Some(local)) => lookup.lookup(client, local),
            _ => None,
        };
        match origin {
            Some(o) => ConnIdentity {
                client,
                policy_id: o.policy_id,
                origin: Some(o),
                peer_uid: None,
            },
            None => self.direct(client, local),
        }
    }

    /// A connection the redirect never sends (the tunnel listener), or one it did not send:
    /// in eBPF mode the local peer's uid picks the profile.
    pub fn direct(&self, client: ClientAddr, local: Option<LocalAddr>) -> ConnIdentity {
        let (Some(direct), Some(local)) = (&self.direct, local) else {
            return ConnIdentity::anonymous(client);
        };
        let peer_uid = (self.peer_uid)(client, local);
        let policy_id = peer_uid
            .and_then(|uid| direct.load().get(&uid).copied())
            .unwrap_or_default();
        ConnIdentity {
            client,
            origin: None,
            peer_uid,
            policy_id,
        }
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

    fn origin(uid: u32, policy: u32) -> ConnOrigin {
        ConnOrigin {
            orig_dst: "192.0.2.10:80".parse().unwrap(),
            uid: Uid(uid),
            pid: 4242,
            comm: "curl".into(),
            policy_id: PolicyId(policy),
            cgroup_id: CgroupId(7),
        }
    }

    /// The uid `/proc` would report for any direct peer in these tests.
    fn peer_1001(_: ClientAddr, _: LocalAddr) -> Option<Uid> {
        Some(Uid(1001))
    }

    fn identifier(mock: Arc<MockOrigDst>) -> ConnIdentifier {
        let direct = HashMap::from([(Uid(1001), PolicyId(2))]);
        ConnIdentifier::ebpf(mock, direct).with_peer_uid_lookup(peer_1001)
    }

    #[test]
    fn a_redirected_connection_takes_its_origin_and_kernel_policy() {
        let mock = Arc::new(MockOrigDst::default());
        mock.insert(client(), local(), origin(1000, 3));
        let id = identifier(mock).redirected(client(), Some(local()));
        assert_eq!(id.origin, Some(origin(1000, 3)));
        assert_eq!(id.uid(), Some(Uid(1000)));
        assert_eq!(id.policy_id, PolicyId(3));
        assert_eq!(id.dest_ip(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(
            id.peer_uid, None,
            "a redirected connection needs no peer lookup"
        );
    }

    #[test]
    fn each_connection_is_looked_up_once() {
        let mock = Arc::new(MockOrigDst::default());
        mock.insert(client(), local(), origin(1000, 3));
        let ident = identifier(mock);
        assert!(ident.redirected(client(), Some(local())).origin.is_some());
        // Second time: no entry, so the connection counts as direct.
        let again = ident.redirected(client(), Some(local()));
        assert!(again.origin.is_none());
        assert_eq!(again.peer_uid, Some(Uid(1001)));
    }

    #[test]
    fn client_and_local_are_not_interchangeable() {
        let mock = Arc::new(MockOrigDst::default());
        mock.insert(client(), local(), origin(1000, 3));
        let swapped = ClientAddr(local().0);
        let id = identifier(mock).redirected(swapped, Some(LocalAddr(client().0)));
        assert!(id.origin.is_none());
    }

    #[test]
    fn a_direct_peer_gets_its_uids_profile() {
        let mock = Arc::new(MockOrigDst::default());
        let id = identifier(mock).direct(client(), Some(local()));
        assert_eq!(id.uid(), Some(Uid(1001)));
        assert_eq!(id.policy_id, PolicyId(2));
        assert!(id.dest_ip().is_none());
    }

    #[test]
    fn a_peer_without_a_profile_gets_the_default() {
        fn nobody(_: ClientAddr, _: LocalAddr) -> Option<Uid> {
            Some(Uid(4000))
        }
        let mock = Arc::new(MockOrigDst::default());
        let ident = identifier(mock).with_peer_uid_lookup(nobody);
        let id = ident.direct(client(), Some(local()));
        assert_eq!(id.uid(), Some(Uid(4000)));
        assert_eq!(id.policy_id, PolicyId::DEFAULT);
    }

    #[test]
    fn without_ebpf_every_connection_is_anonymous() {
        let ident = ConnIdentifier::off().with_peer_uid_lookup(peer_1001);
        for id in [
            ident.redirected(client(), Some(local())),
            ident.direct(client(), Some(local())),
        ] {
            assert!(id.origin.is_none());
            assert_eq!(id.uid(), None, "no peer lookup outside eBPF mode");
            assert_eq!(id.policy_id, PolicyId::DEFAULT);
        }
    }
}
