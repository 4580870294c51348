//! Where a governed destination goes (listener, counter), address forms, and the record of the
//! original destination under the socket cookie.

use core::ffi::c_void;

use agent_common::{
    Counter, DbRedirect, DestKey, Endpoint4, Endpoint6, ListenerConfig, ListenerKind, OrigDst,
    Policy,
};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid,
    generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
};

use crate::maps::{IRON_DB_REDIRECTS, IRON_ORIG_BY_COOKIE};
use crate::{PORT_DNS, PORT_HTTP, PORT_HTTPS, SOCK_DGRAM, SOCK_STREAM};

#[inline(always)]
pub(crate) const fn mapped4(ip_be: u32) -> [u32; 4] {
    [0, 0, 0xffff_u32.to_be(), ip_be]
}

/// 127.0.0.0/8 or 0.0.0.0 (a connect to the unspecified address reaches the local host).
#[inline(always)]
pub(crate) const fn is_loopback4(ip_host: u32) -> bool {
    (ip_host >> 24) == 127 || ip_host == 0
}

#[inline(always)]
pub(crate) fn cookie_of(ctx: *mut c_void) -> u64 {
    // SAFETY: `ctx` is the program's context pointer, as the helper requires.
    unsafe { bpf_get_socket_cookie(ctx) }
}

/// Records the original destination and identity under the socket cookie. Returns false if the
/// entry could not be written; the caller then denies (the agent could not tell where the
/// connection was going, so it must not be redirected).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    ctx: *mut c_void,
    addr: [u32; 4],
    wire_addr: [u32; 4],
    port: u16,
    family: u16,
    sock_family: u16,
    listener: ListenerKind,
    pol: &Policy,
    uid: u32,
) -> bool {
    let cookie = cookie_of(ctx);
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let orig = OrigDst {
        // SAFETY: plain helper call without pointer arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        addr,
        wire_addr,
        port,
        family,
        sock_family,
        listener: listener as u16,
        uid,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        policy_id: pol.policy_id,
        flags: 0,
        comm,
    };
    IRON_ORIG_BY_COOKIE.insert(&cookie, &orig, 0).is_ok()
}

/// Which listener a governed (type, port) pair goes to, or the counter to bump when it is denied.
#[inline(always)]
pub(crate) fn route(ty: u32, port: u16) -> Result<(ListenerKind, Counter), Counter> {
    if ty == SOCK_STREAM {
        if port == PORT_HTTP {
            Ok((ListenerKind::Http, Counter::RedirectHttp))
        } else if port == PORT_HTTPS {
            Ok((ListenerKind::Https, Counter::RedirectHttps))
        } else if port == PORT_DNS {
            // DNS over TCP goes to the agent's DNS listener (same port, TCP); DoT (853) stays
            // denied like every other port.
            Ok((ListenerKind::Dns, Counter::RedirectDnsConnect))
        } else {
            Err(Counter::DenyTcp)
        }
    } else if ty == SOCK_DGRAM {
        if port == PORT_DNS {
            Ok((ListenerKind::Dns, Counter::RedirectDnsConnect))
        } else {
            Err(Counter::DenyUdp)
        }
    } else {
        Err(Counter::DenyOtherType)
    }
}

#[inline(always)]
pub(crate) fn ep4(cfg: &ListenerConfig, k: ListenerKind) -> Endpoint4 {
    match k {
        ListenerKind::Http => cfg.http4,
        ListenerKind::Https => cfg.https4,
        ListenerKind::Dns => cfg.dns4,
        // Database destinations carry their target in IRON_DB_REDIRECTS.
        ListenerKind::Postgres => Endpoint4::default(),
    }
}

#[inline(always)]
pub(crate) fn ep6(cfg: &ListenerConfig, k: ListenerKind) -> Endpoint6 {
    match k {
        ListenerKind::Http => cfg.http6,
        ListenerKind::Https => cfg.https6,
        ListenerKind::Dns => cfg.dns6,
        ListenerKind::Postgres => Endpoint6::default(),
    }
}

#[inline(always)]
pub(crate) fn listener_from(v: u16) -> ListenerKind {
    if v == ListenerKind::Https as u16 {
        ListenerKind::Https
    } else if v == ListenerKind::Dns as u16 {
        ListenerKind::Dns
    } else if v == ListenerKind::Postgres as u16 {
        ListenerKind::Postgres
    } else {
        ListenerKind::Http
    }
}

#[inline(always)]
pub(crate) fn redirect_counter(kind: ListenerKind, ok: Counter, sendmsg: bool) -> Counter {
    match kind {
        ListenerKind::Dns if sendmsg => Counter::RedirectDnsSendmsg,
        _ => ok,
    }
}

#[inline(always)]
pub(crate) fn counter_for(kind: ListenerKind) -> Counter {
    match kind {
        ListenerKind::Http => Counter::RedirectHttp,
        ListenerKind::Https => Counter::RedirectHttps,
        ListenerKind::Dns => Counter::RedirectDnsConnect,
        ListenerKind::Postgres => Counter::RedirectPostgres,
    }
}

/// The proxy listener for a configured database destination (canonical address, port).
#[inline(always)]
pub(crate) fn db_redirect(addr: [u32; 4], port: u16) -> Option<DbRedirect> {
    let key = DestKey {
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: the value is copied out immediately; `DbRedirect` is plain data.
    unsafe { IRON_DB_REDIRECTS.get(&key) }.copied()
}

/// The endpoints a redirected socket of kind `lk` was sent to (for restoring its peer).
#[inline(always)]
pub(crate) fn endpoints(
    cfg: &ListenerConfig,
    lk: ListenerKind,
    orig: &OrigDst,
) -> (Endpoint4, Endpoint6) {
    if matches!(lk, ListenerKind::Postgres) {
        db_redirect(orig.addr, orig.port)
            .map_or((Endpoint4::default(), Endpoint6::default()), |r| {
                (r.ep4, r.ep6)
            })
    } else {
        (ep4(cfg, lk), ep6(cfg, lk))
    }
}

/// How an IPv6 destination relates to IPv4.
#[derive(Clone, Copy)]
pub(crate) enum V6Kind {
    /// `::ffff:a.b.c.d`: the socket actually talks IPv4.
    Mapped(u32),
    /// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` or 6to4 `2002:aabb:ccdd::/48`: sent as
    /// IPv6 on the wire, but policy treats it as the IPv4 address it carries.
    Carried(u32),
    /// Native IPv6.
    Native,
}

/// Classifies an address given as network-order words; the returned IPv4 is host order.
#[inline(always)]
pub(crate) fn v6_kind(w: [u32; 4]) -> V6Kind {
    let h0 = u32::from_be(w[0]);
    let h1 = u32::from_be(w[1]);
    let h2 = u32::from_be(w[2]);
    let h3 = u32::from_be(w[3]);
    if h0 == 0 && h1 == 0 && h2 == 0xffff {
        V6Kind::Mapped(h3)
    } else if h0 == 0 && h1 == 0 && h2 == 0 && h3 > 1 {
        V6Kind::Carried(h3)
    } else if h0 == 0x0064_ff9b && h1 == 0 && h2 == 0 {
        V6Kind::Carried(h3)
    } else if (h0 >> 16) == 0x2002 {
        V6Kind::Carried((h0 << 16) | (h1 >> 16))
    } else {
        V6Kind::Native
    }
}
