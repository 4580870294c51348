//! `cgroup/recvmsg4/6` and `cgroup/getpeername4/6`: the workload sees its original peer (and DNS
//! replies from the resolver it asked).

use agent_common::{AF_INET, AF_INET6, Counter, ListenerKind};
use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::ALLOW;
use crate::maps::{IRON_ORIG_BY_COOKIE, config, count, rd, wr};
use crate::route::{cookie_of, endpoints, listener_from, mapped4};

#[cgroup_sock_addr(recvmsg4)]
pub fn iron_recvmsg4(ctx: SockAddrContext) -> i32 {
    try_restore4(ctx.sock_addr, true);
    // recvmsg programs must return 1; anything else is rejected at load time.
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn iron_recvmsg6(ctx: SockAddrContext) -> i32 {
    try_restore6(ctx.sock_addr, true);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn iron_getpeername4(ctx: SockAddrContext) -> i32 {
    try_restore4(ctx.sock_addr, false);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn iron_getpeername6(ctx: SockAddrContext) -> i32 {
    try_restore6(ctx.sock_addr, false);
    ALLOW
}

/// Rewrites the address seen by the workload back to the original destination, but only if the
/// socket was redirected (cookie entry of the right family) and the address currently shown is the
/// listener it was redirected to. `dns_only` restricts recvmsg to DNS replies.
#[inline(always)]
pub(crate) fn try_restore4(sa: *mut bpf_sock_addr, dns_only: bool) {
    let Some(cfg) = config() else {
        return;
    };
    let cookie = cookie_of(sa.cast());
    // SAFETY: the value is copied out immediately; `OrigDst` is plain data.
    let Some(orig) = (unsafe { IRON_ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return;
    };
    if orig.sock_family != AF_INET {
        return;
    }
    let lk = listener_from(orig.listener);
    if dns_only && !matches!(lk, ListenerKind::Dns) {
        return;
    }
    let ep = endpoints(cfg, lk, &orig).0;
    // SAFETY: ctx field reads at constant offsets.
    let (ip_be, port_raw) = unsafe {
        (
            rd(&raw const (*sa).user_ip4),
            rd(&raw const (*sa).user_port),
        )
    };
    if ip_be != ep.addr || u16::from_be(port_raw as u16) != ep.port {
        return;
    }
    // SAFETY: recvmsg4/getpeername4 may write user_ip4 and user_port.
    unsafe {
        wr(&raw mut (*sa).user_ip4, orig.wire_addr[3]);
        wr(&raw mut (*sa).user_port, u32::from(orig.port.to_be()));
    }
    count(if dns_only {
        Counter::DnsReplyRestored
    } else {
        Counter::PeerRestored
    });
}

#[inline(always)]
pub(crate) fn try_restore6(sa: *mut bpf_sock_addr, dns_only: bool) {
    let Some(cfg) = config() else {
        return;
    };
    let cookie = cookie_of(sa.cast());
    // SAFETY: as in try_restore4.
    let Some(orig) = (unsafe { IRON_ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return;
    };
    if orig.sock_family != AF_INET6 {
        return;
    }
    let lk = listener_from(orig.listener);
    if dns_only && !matches!(lk, ListenerKind::Dns) {
        return;
    }
    // SAFETY: ctx field reads at constant offsets.
    let (w, port_raw) = unsafe {
        (
            [
                rd(&raw const (*sa).user_ip6[0]),
                rd(&raw const (*sa).user_ip6[1]),
                rd(&raw const (*sa).user_ip6[2]),
                rd(&raw const (*sa).user_ip6[3]),
            ],
            rd(&raw const (*sa).user_port),
        )
    };
    let port = u16::from_be(port_raw as u16);
    let (e4, e6) = endpoints(cfg, lk, &orig);
    let is_listener =
        (w == mapped4(e4.addr) && port == e4.port) || (w == e6.addr && port == e6.port);
    if !is_listener {
        return;
    }
    let o = orig.wire_addr;
    // SAFETY: recvmsg6/getpeername6 may write user_ip6 and user_port.
    unsafe {
        wr(&raw mut (*sa).user_ip6[0], o[0]);
        wr(&raw mut (*sa).user_ip6[1], o[1]);
        wr(&raw mut (*sa).user_ip6[2], o[2]);
        wr(&raw mut (*sa).user_ip6[3], o[3]);
        wr(&raw mut (*sa).user_port, u32::from(orig.port.to_be()));
    }
    count(if dns_only {
        Counter::DnsReplyRestored
    } else {
        Counter::PeerRestored
    });
}
