//! Shared state of the hardening programs (`bind`, `sockopt`, `lsm`): their maps, counters and
//! the governed-task test. Which tasks are governed is decided exactly as for interception
//! ([`crate::classify`]), so an exempt identity is exempt everywhere.

use agent_common::harden::{
    BIND_PORT_ENTRIES, HARDEN_COUNTER_COUNT, HardenConfig, HardenCounter, InodeKey,
    PROTECTED_ENTRIES, UNIX_ALLOW_ENTRIES, UnixPath,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};

#[map]
pub(crate) static IRON_HARDEN_CFG: Array<HardenConfig> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static IRON_BIND_PORTS: HashMap<u16, u8> =
    HashMap::with_max_entries(BIND_PORT_ENTRIES, 0);
#[map]
pub(crate) static IRON_UNIX_ALLOW: HashMap<UnixPath, u8> =
    HashMap::with_max_entries(UNIX_ALLOW_ENTRIES, 0);
#[map]
pub(crate) static IRON_PROTECTED: HashMap<InodeKey, u8> =
    HashMap::with_max_entries(PROTECTED_ENTRIES, 0);
#[map]
static IRON_HARDEN_CNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(HARDEN_COUNTER_COUNT, 0);

#[inline(always)]
pub(crate) fn count(c: HardenCounter) {
    if let Some(p) = IRON_HARDEN_CNT.get_ptr_mut(c as u32) {
        // SAFETY: this CPU's slot; programs run with migration disabled.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn harden_config() -> Option<&'static HardenConfig> {
    IRON_HARDEN_CFG.get(0)
}

/// Whether the current task is governed. Without the interception config (never written: the
/// agent writes it before attaching) nobody is treated as governed here; the interception hooks
/// already fail closed in that state.
#[inline(always)]
pub(crate) fn governed() -> bool {
    match crate::config() {
        Some(cfg) => crate::classify(cfg).is_some(),
        None => false,
    }
}
