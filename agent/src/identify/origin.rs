//! The original destination of a redirected connection: the kernel side is behind
//! [`OrigDstLookup`], so the identify step runs (and is tested) without eBPF or root.
//! [`crate::ebpf`] implements it over the pinned BPF map; [`MockOrigDst`] is the test double.

use std::collections::HashMap;
use std::net::SocketAddr;

use parking_lot::Mutex;

use super::addr::{ClientAddr, LocalAddr};
use super::ids::{CgroupId, PolicyId, Uid};

/// Where a redirected connection was originally going, and who opened it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnOrigin {
    /// The destination the workload passed to `connect()`. IPv4 carried in IPv6 forms
    /// (`::ffff:a.b.c.d`, NAT64, 6to4, compat) is reported as the plain IPv4 address.
    pub orig_dst: SocketAddr,
    /// Kernel uid of the connecting task.
    pub uid: Uid,
    /// Process id (tgid) of the connecting task.
    pub pid: u32,
    /// Command name (`comm`, at most 15 bytes) of the connecting task.
    pub comm: String,
    /// Policy id of the uid or cgroup rule that governed the task.
    pub policy_id: PolicyId,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: CgroupId,
    /// Whether the kernel redirected the connection or the task dialled the agent itself.
    pub route: Route,
}

/// How a connection the kernel recorded reached the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Rewritten at `connect()` from `orig_dst` to an agent listener.
    Redirected,
    /// The task connected to the agent's own port (`orig_dst` is that listener); `PeerMode` is
    /// the task's mode when it connected.
    Direct(PeerMode),
}

/// The mode of a task that connected to the agent directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// Governed (redirect mode): served with its policy.
    Governed,
    /// A `deny` identity: gets nothing.
    Denied,
    /// Not governed (root, the agent's uid, an `exempt` identity): the top-level pipeline.
    Exempt,
}

/// Looks up the origin of a connection accepted on one of the agent's redirect listeners.
pub trait OrigDstLookup: Send + Sync {
    /// `client` = the accepted socket's `peer_addr()`, `local` = its `local_addr()`. Returns
    /// `None` if the connection was not redirected by the programs (e.g. a direct loopback
    /// connection). The entry is removed: each connection can be looked up once.
    fn lookup(&self, client: ClientAddr, local: LocalAddr) -> Option<ConnOrigin>;
}

/// An [`OrigDstLookup`] that answers from a table filled by the test, with the kernel's
/// look-up-once semantics.
#[derive(Debug, Default)]
pub struct MockOrigDst {
    entries: Mutex<HashMap<(ClientAddr, LocalAddr), ConnOrigin>>,
}

impl MockOrigDst {
    /// Makes the next lookup of `(client, local)` return `origin`.
    pub fn insert(&self, client: ClientAddr, local: LocalAddr, origin: ConnOrigin) {
        self.entries.lock().insert((client, local), origin);
    }
}

impl OrigDstLookup for MockOrigDst {
    fn lookup(&self, client: ClientAddr, local: LocalAddr) -> Option<ConnOrigin> {
        self.entries.lock().remove(&(client, local))
    }
}
