//! `cgroup/sock_create`: governed tasks may create TCP and UDP inet sockets only.

use agent_common::Counter;
use aya_ebpf::{
    bindings::bpf_sock, helpers::bpf_get_current_uid_gid, macros::cgroup_sock,
    programs::SockContext,
};
use aya_log_ebpf::debug;

use crate::classify::classify;
use crate::maps::{config, deny, rd};
use crate::{ALLOW, DENY, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM};

#[cgroup_sock(sock_create)]
pub fn iron_sock_create(ctx: SockContext) -> i32 {
    let verdict = try_sock_create(ctx.sock);
    if verdict == DENY {
        let sk = ctx.sock;
        // SAFETY: ctx field reads at constant offsets (evaluated only when logging is on).
        debug!(
            &ctx,
            "sock_create denied: uid {} type {} protocol {}",
            bpf_get_current_uid_gid() as u32,
            rd(unsafe { &raw const (*sk).type_ }),
            rd(unsafe { &raw const (*sk).protocol })
        );
    }
    verdict
}

#[inline(always)]
pub(crate) fn try_sock_create(sk: *mut bpf_sock) -> i32 {
    let Some(cfg) = config() else {
        return DENY;
    };
    if classify(cfg).is_none() {
        return ALLOW;
    }
    // SAFETY: ctx field reads at constant offsets.
    let (ty, proto) = unsafe { (rd(&raw const (*sk).type_), rd(&raw const (*sk).protocol)) };
    // The kernel has already resolved protocol 0 to the default (TCP/UDP) by the time this hook
    // runs, so an explicit allow-list of the two pairs covers every legitimate socket.
    if (ty == SOCK_STREAM && proto == IPPROTO_TCP) || (ty == SOCK_DGRAM && proto == IPPROTO_UDP) {
        ALLOW
    } else {
        deny(Counter::DenySockCreate)
    }
}
