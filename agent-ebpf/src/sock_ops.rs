//! `sock_ops`: when a redirected TCP connection is established, its cookie entry is copied to a
//! map keyed by the connection's 4-tuple, which the agent reads after `accept()`.

use agent_common::{AF_INET, Counter, SockKey};
use aya_ebpf::{
    bindings::BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, macros::sock_ops, programs::SockOpsContext,
};

use crate::maps::{IRON_ORIG_BY_COOKIE, IRON_ORIG_BY_TUPLE, count, rd};
use crate::route::{cookie_of, mapped4};

#[sock_ops]
pub fn iron_sock_ops(ctx: SockOpsContext) -> u32 {
    try_sock_ops(&ctx);
    1
}

#[inline(always)]
pub(crate) fn try_sock_ops(ctx: &SockOpsContext) {
    let ops = ctx.ops;
    // SAFETY: ctx field read at a constant offset.
    let op = rd(unsafe { &raw const (*ops).op });
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return;
    }
    let cookie = cookie_of(ops.cast());
    // SAFETY: as in try_restore4.
    let Some(orig) = (unsafe { IRON_ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return;
    };
    // Load every field unconditionally before selecting on the family (recipe pitfall 1).
    // SAFETY: ctx field reads at constant offsets.
    let (family, l4, r4, l6, r6, lport, rport) = unsafe {
        (
            rd(&raw const (*ops).family),
            rd(&raw const (*ops).local_ip4),
            rd(&raw const (*ops).remote_ip4),
            [
                rd(&raw const (*ops).local_ip6[0]),
                rd(&raw const (*ops).local_ip6[1]),
                rd(&raw const (*ops).local_ip6[2]),
                rd(&raw const (*ops).local_ip6[3]),
            ],
            [
                rd(&raw const (*ops).remote_ip6[0]),
                rd(&raw const (*ops).remote_ip6[1]),
                rd(&raw const (*ops).remote_ip6[2]),
                rd(&raw const (*ops).remote_ip6[3]),
            ],
            rd(&raw const (*ops).local_port),
            rd(&raw const (*ops).remote_port),
        )
    };
    let (src_addr, dst_addr) = if family == u32::from(AF_INET) {
        (mapped4(l4), mapped4(r4))
    } else {
        (l6, r6)
    };
    let key = SockKey {
        src_addr,
        dst_addr,
        // local_port is host order; remote_port holds the network-order port in its upper half.
        src_port: lport as u16,
        dst_port: u16::from_be((rport >> 16) as u16),
    };
    if IRON_ORIG_BY_TUPLE.insert(&key, &orig, 0).is_ok() {
        count(Counter::TupleRecorded);
    }
}
