//! `cgroup/connect4` and `cgroup/sendmsg4`: one decision for both (a connected and an
//! unconnected socket reach the same destinations), IPv4 destinations.

use agent_common::{AF_INET, AF_INET6, Counter, Endpoint4, ListenerKind, Policy, loopback, mode};
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::bpf_get_current_uid_gid, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;

use crate::classify::classify;
use crate::direct::{direct4, exempt_direct4};
use crate::maps::{config, count, deny, rd, wr};
use crate::route::{
    counter_for, db_redirect, ep4, is_loopback4, mapped4, record, redirect_counter, route,
};
use crate::{ALLOW, DENY, PORT_DNS, SOCK_STREAM};

#[cgroup_sock_addr(connect4)]
pub fn iron_connect4(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect4(ctx.sock_addr, false);
    if verdict == DENY {
        log_deny4(&ctx, "connect4");
    }
    verdict
}

#[cgroup_sock_addr(sendmsg4)]
pub fn iron_sendmsg4(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect4(ctx.sock_addr, true);
    if verdict == DENY {
        log_deny4(&ctx, "sendmsg4");
    }
    verdict
}

/// `debug` line for a denied IPv4 destination (a denied call was not rewritten: the fields are
/// still the workload's).
#[inline(always)]
pub(crate) fn log_deny4(ctx: &SockAddrContext, hook: &str) {
    let sa = ctx.sock_addr;
    // SAFETY: ctx field reads at constant offsets (evaluated only when logging is on).
    debug!(
        ctx,
        "{} denied: uid {} to {:i}:{}",
        hook,
        bpf_get_current_uid_gid() as u32,
        u32::from_be(rd(unsafe { &raw const (*sa).user_ip4 })),
        u16::from_be(rd(unsafe { &raw const (*sa).user_port }) as u16)
    );
}

#[inline(always)]
pub(crate) fn try_connect4(sa: *mut bpf_sock_addr, sendmsg: bool) -> i32 {
    let Some(cfg) = config() else {
        return DENY;
    };
    let Some((pol, uid)) = classify(cfg) else {
        return exempt_direct4(sa);
    };
    // SAFETY: ctx field reads at constant offsets.
    let (ip_be, port_raw, ty) = unsafe {
        (
            rd(&raw const (*sa).user_ip4),
            rd(&raw const (*sa).user_port),
            rd(&raw const (*sa).type_),
        )
    };
    let port = u16::from_be(port_raw as u16);
    let ip = u32::from_be(ip_be);

    // A configured database destination (loopback included) goes to the PostgreSQL proxy.
    if ty == SOCK_STREAM && pol.mode == mode::REDIRECT {
        if let Some(r) = db_redirect(mapped4(ip_be), port) {
            return redirect4(
                sa,
                r.ep4,
                &pol,
                uid,
                ip_be,
                port,
                ListenerKind::Postgres,
                false,
            );
        }
    }
    if is_loopback4(ip) {
        if let Some(v) = direct4(sa, cfg, &pol, uid, ty, ip_be, port) {
            return v;
        }
        // DNS to a local resolver still goes to the agent (a local resolver would resolve and
        // forward anything: DNS exfiltration), unless it already is the agent's DNS listener.
        let to_agent_dns = ip_be == cfg.dns4.addr && port == cfg.dns4.port;
        // TCP too: a local resolver reached over TCP would leak names just the same.
        if port == PORT_DNS && pol.mode == mode::REDIRECT && !to_agent_dns {
            let ep = ep4(cfg, ListenerKind::Dns);
            return redirect4(sa, ep, &pol, uid, ip_be, port, ListenerKind::Dns, sendmsg);
        }
        if cfg.loopback == loopback::ALLOW {
            return ALLOW;
        }
        return deny(Counter::DenyLoopback);
    }
    if pol.mode != mode::REDIRECT {
        return deny(if ty == SOCK_STREAM {
            Counter::DenyTcp
        } else {
            Counter::DenyUdp
        });
    }
    match route(ty, port) {
        Ok((kind, _)) => redirect4(sa, ep4(cfg, kind), &pol, uid, ip_be, port, kind, sendmsg),
        Err(c) => deny(c),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn redirect4(
    sa: *mut bpf_sock_addr,
    ep: Endpoint4,
    pol: &Policy,
    uid: u32,
    ip_be: u32,
    port: u16,
    kind: ListenerKind,
    sendmsg: bool,
) -> i32 {
    if ep.port == 0 {
        return deny(Counter::DenyNoListener);
    }
    let a = mapped4(ip_be);
    // The socket may be AF_INET6: a dual-stack socket sending to `::ffff:a.b.c.d` reaches
    // udp_sendmsg and therefore this sendmsg4 hook, while its replies go through recvmsg6.
    // SAFETY: ctx field read at a constant offset.
    let sock_family = if rd(unsafe { &raw const (*sa).family }) == u32::from(AF_INET6) {
        AF_INET6
    } else {
        AF_INET
    };
    if !record(sa.cast(), a, a, port, AF_INET, sock_family, kind, pol, uid) {
        return deny(Counter::DenyRecordFailed);
    }
    // SAFETY: connect4/sendmsg4 may write user_ip4 and user_port (as a 4-byte store).
    unsafe {
        wr(&raw mut (*sa).user_ip4, ep.addr);
        wr(&raw mut (*sa).user_port, u32::from(ep.port.to_be()));
    }
    count(redirect_counter(kind, counter_for(kind), sendmsg));
    ALLOW
}
