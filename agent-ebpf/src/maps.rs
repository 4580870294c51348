//! The interception programs' maps (shared with userspace by name, see `agent_common`) and the
//! small helpers every hook uses: counters, context field access, the listener config.

use core::ptr::{read_volatile, write_volatile};

use agent_common::{
    AGENT_PORT_ENTRIES, COUNTER_COUNT, Counter, DB_REDIRECT_ENTRIES, DbRedirect, DestKey,
    GOVERNED_CGROUP_ENTRIES, ListenerConfig, ORIG_MAP_ENTRIES, OrigDst, Policy, SockKey,
    UID_POLICY_ENTRIES,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};

use crate::DENY;

#[map]
pub(crate) static IRON_CONFIG: Array<ListenerConfig> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static IRON_UID_POLICY: HashMap<u32, Policy> =
    HashMap::with_max_entries(UID_POLICY_ENTRIES, 0);
#[map]
pub(crate) static IRON_GOVERNED_CGROUPS: HashMap<u64, Policy> =
    HashMap::with_max_entries(GOVERNED_CGROUP_ENTRIES, 0);
#[map]
pub(crate) static IRON_ORIG_BY_COOKIE: LruHashMap<u64, OrigDst> =
    LruHashMap::with_max_entries(ORIG_MAP_ENTRIES, 0);
#[map]
pub(crate) static IRON_ORIG_BY_TUPLE: LruHashMap<SockKey, OrigDst> =
    LruHashMap::with_max_entries(ORIG_MAP_ENTRIES, 0);
#[map]
pub(crate) static IRON_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);
#[map]
pub(crate) static IRON_DB_REDIRECTS: HashMap<DestKey, DbRedirect> =
    HashMap::with_max_entries(DB_REDIRECT_ENTRIES, 0);
// Direct connections to the agent's own listeners (see `direct`).
#[map]
pub(crate) static IRON_AGENT_PORTS: HashMap<u32, u32> =
    HashMap::with_max_entries(AGENT_PORT_ENTRIES, 0);

#[inline(always)]
pub(crate) fn count(c: Counter) {
    if let Some(p) = IRON_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot returned by the kernel for this CPU; programs run with migration
        // disabled, so no other writer touches it concurrently.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn deny(c: Counter) -> i32 {
    count(c);
    DENY
}

/// Reads a `u32` context field at a constant offset (see the crate docs on why volatile).
#[inline(always)]
pub(crate) fn rd(p: *const u32) -> u32 {
    // SAFETY: `p` points into the program context, which the verifier checks at load time.
    unsafe { read_volatile(p) }
}

#[inline(always)]
pub(crate) fn wr(p: *mut u32, v: u32) {
    // SAFETY: as for `rd`; writes are limited to the fields the attach type permits.
    unsafe { write_volatile(p, v) }
}

#[inline(always)]
pub(crate) fn config() -> Option<&'static ListenerConfig> {
    IRON_CONFIG.get(0)
}
