//! `cgroup/connect6` and `cgroup/sendmsg6`: as `connect4` for IPv6 sockets, including
//! v4-mapped and IPv4-carrying IPv6 destinations.

use agent_common::{
    AF_INET, AF_INET6, Counter, Endpoint4, Endpoint6, ListenerKind, Policy, loopback, mode,
};
use aya_ebpf::{
    bindings::bpf_sock_addr, helpers::bpf_get_current_uid_gid, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;

use crate::classify::classify;
use crate::direct::{direct6, exempt_direct6};
use crate::maps::{config, count, deny, rd, wr};
use crate::route::{
    V6Kind, counter_for, db_redirect, ep4, ep6, is_loopback4, mapped4, record, redirect_counter,
    route, v6_kind,
};
use crate::{ALLOW, DENY, PORT_DNS, SOCK_STREAM};

#[cgroup_sock_addr(connect6)]
pub fn iron_connect6(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect6(ctx.sock_addr, false);
    if verdict == DENY {
        log_deny6(&ctx, "connect6");
    }
    verdict
}

#[cgroup_sock_addr(sendmsg6)]
pub fn iron_sendmsg6(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect6(ctx.sock_addr, true);
    if verdict == DENY {
        log_deny6(&ctx, "sendmsg6");
    }
    verdict
}

/// `debug` line for a denied IPv6 destination.
#[inline(always)]
pub(crate) fn log_deny6(ctx: &SockAddrContext, hook: &str) {
    let sa = ctx.sock_addr;
    // SAFETY: ctx field reads at constant offsets, one 4-byte word at a time.
    let w = unsafe {
        [
            rd(&raw const (*sa).user_ip6[0]),
            rd(&raw const (*sa).user_ip6[1]),
            rd(&raw const (*sa).user_ip6[2]),
            rd(&raw const (*sa).user_ip6[3]),
        ]
    };
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let q = w[i].to_ne_bytes();
        b[4 * i] = q[0];
        b[4 * i + 1] = q[1];
        b[4 * i + 2] = q[2];
        b[4 * i + 3] = q[3];
        i += 1;
    }
    debug!(
        ctx,
        "{} denied: uid {} to [{:i}]:{}",
        hook,
        bpf_get_current_uid_gid() as u32,
        b,
        u16::from_be(rd(unsafe { &raw const (*sa).user_port }) as u16)
    );
}

#[inline(always)]
pub(crate) fn try_connect6(sa: *mut bpf_sock_addr, sendmsg: bool) -> i32 {
    let Some(cfg) = config() else {
        return DENY;
    };
    let Some((pol, uid)) = classify(cfg) else {
        return exempt_direct6(sa);
    };
    // SAFETY: ctx field reads at constant offsets, one 4-byte word at a time.
    let (w, port_raw, ty) = unsafe {
        (
            [
                rd(&raw const (*sa).user_ip6[0]),
                rd(&raw const (*sa).user_ip6[1]),
                rd(&raw const (*sa).user_ip6[2]),
                rd(&raw const (*sa).user_ip6[3]),
            ],
            rd(&raw const (*sa).user_port),
            rd(&raw const (*sa).type_),
        )
    };
    let port = u16::from_be(port_raw as u16);
    let kind = v6_kind(w);

    if ty == SOCK_STREAM && pol.mode == mode::REDIRECT {
        let canon = match kind {
            V6Kind::Mapped(v4) | V6Kind::Carried(v4) => mapped4(v4.to_be()),
            V6Kind::Native => w,
        };
        if let Some(r) = db_redirect(canon, port) {
            let (e4, e6) = (r.ep4, r.ep6);
            return redirect6(
                sa,
                (e4, e6),
                &pol,
                uid,
                w,
                kind,
                port,
                ListenerKind::Postgres,
                false,
            );
        }
    }

    // Only addresses that really stay on this host count as loopback. A loopback IPv4 carried in
    // NAT64/6to4/compat form would leave the host as IPv6, so it is denied, never allowed.
    let is_zero = w[0] == 0 && w[1] == 0 && w[2] == 0;
    let local = match kind {
        V6Kind::Mapped(v4) => is_loopback4(v4),
        V6Kind::Native => false,
        // `::` and `::1` are excluded from Carried by v6_kind; they are native loopback.
        V6Kind::Carried(_) => false,
    } || (is_zero && (u32::from_be(w[3]) <= 1));
    let carried_loopback = matches!(kind, V6Kind::Carried(v4) if is_loopback4(v4));

    if local {
        if let Some(v) = direct6(sa, cfg, &pol, uid, ty, w, kind, port) {
            return v;
        }
        let to_agent_dns = match kind {
            V6Kind::Mapped(_) => w[3] == cfg.dns4.addr && port == cfg.dns4.port,
            _ => w == cfg.dns6.addr && port == cfg.dns6.port,
        };
        if port == PORT_DNS && pol.mode == mode::REDIRECT && !to_agent_dns {
            return redirect6(
                sa,
                (ep4(cfg, ListenerKind::Dns), ep6(cfg, ListenerKind::Dns)),
                &pol,
                uid,
                w,
                kind,
                port,
                ListenerKind::Dns,
                sendmsg,
            );
        }
        if cfg.loopback == loopback::ALLOW {
            return ALLOW;
        }
        return deny(Counter::DenyLoopback);
    }
    if carried_loopback {
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
        Ok((lk, _)) => {
            let eps = (ep4(cfg, lk), ep6(cfg, lk));
            redirect6(sa, eps, &pol, uid, w, kind, port, lk, sendmsg)
        }
        Err(c) => deny(c),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn redirect6(
    sa: *mut bpf_sock_addr,
    eps: (Endpoint4, Endpoint6),
    pol: &Policy,
    uid: u32,
    w: [u32; 4],
    kind: V6Kind,
    port: u16,
    lk: ListenerKind,
    sendmsg: bool,
) -> i32 {
    // A v4-mapped destination means the socket talks IPv4: redirect to the IPv4 listener in mapped
    // form. Everything else stays IPv6 on the wire and goes to the IPv6 listener.
    let (target, tport, canon, family) = match kind {
        V6Kind::Mapped(v4) => {
            let ep = eps.0;
            (mapped4(ep.addr), ep.port, mapped4(v4.to_be()), AF_INET)
        }
        V6Kind::Carried(v4) => {
            let ep = eps.1;
            (ep.addr, ep.port, mapped4(v4.to_be()), AF_INET)
        }
        V6Kind::Native => {
            let ep = eps.1;
            (ep.addr, ep.port, w, AF_INET6)
        }
    };
    if tport == 0 {
        return deny(Counter::DenyNoListener);
    }
    if !record(sa.cast(), canon, w, port, family, AF_INET6, lk, pol, uid) {
        return deny(Counter::DenyRecordFailed);
    }
    // SAFETY: connect6/sendmsg6 may write user_ip6 (4-byte words) and user_port (4-byte store).
    unsafe {
        wr(&raw mut (*sa).user_ip6[0], target[0]);
        wr(&raw mut (*sa).user_ip6[1], target[1]);
        wr(&raw mut (*sa).user_ip6[2], target[2]);
        wr(&raw mut (*sa).user_ip6[3], target[3]);
        wr(&raw mut (*sa).user_port, u32::from(tport.to_be()));
    }
    count(redirect_counter(lk, counter_for(lk), sendmsg));
    ALLOW
}
