//! Who a request comes from, as request-level transforms see it (eBPF mode): the kernel's
//! record of the connecting task and the identity profile that judges it.

use super::ids::{CgroupId, Uid};

/// The identity of the task behind a request. Every field is `None` outside eBPF mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub uid: Option<Uid>,
    /// The uid's name in the passwd table, when it has one.
    pub user: Option<String>,
    /// The task's cgroup v2 id at `connect()`.
    pub cgroup: Option<CgroupId>,
    /// The `intercept.policies` entry whose pipeline runs (`None`: the top-level pipeline).
    pub policy: Option<String>,
}
