//! Direct connections to the agent's own listeners (HTTP, HTTPS, tunnel, DNS).

use core::ffi::c_void;

use agent_common::{
    AF_INET, AF_INET6, Counter, ListenerConfig, ListenerKind, OrigDst, Policy, agent_port,
    loopback, mode, orig_flags,
};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_get_current_cgroup_id,
    },
};

use crate::maps::{IRON_AGENT_PORTS, IRON_ORIG_BY_COOKIE, deny, rd};
use crate::route::{V6Kind, cookie_of, is_loopback4, mapped4};
use crate::{ALLOW, PORT_DNS, SOCK_STREAM};

// A task may connect to the agent's listener itself instead of being redirected. Its identity
// is recorded exactly as for a redirect (cookie entry, copied to the 4-tuple map by sock_ops),
// flagged DIRECT and carrying the task's mode, so the agent serves it with its own policy: a
// `deny` identity is refused, a cgroup-bound policy is recognised, and a peer without an entry
// is unidentified (refused). The mode is checked before the loopback policy: a `deny` task
// never reaches the agent's DNS (or a local resolver on port 53) at all.

/// The [`agent_port`] bits of `port` (0: not one of the agent's listening ports).
#[inline(always)]
pub(crate) fn agent_port_bits(port: u16) -> u32 {
    // SAFETY: the value is copied out immediately; it is a plain u32.
    unsafe { IRON_AGENT_PORTS.get(&u32::from(port)) }.map_or(0, |b| *b)
}

/// Whether `port` is one of the agent's listening ports for `proto` ([`agent_port`] bits).
#[inline(always)]
pub(crate) fn agent_port(port: u16, proto: u32) -> bool {
    agent_port_bits(port) & proto != 0
}

/// What a governed task's loopback connect to `port` means here.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    /// Refused now (a `deny` task asking for DNS).
    Deny,
    /// A TCP connection to the agent: record who opens it, then allow.
    Record,
    /// Not the agent's concern: the ordinary loopback rules apply.
    Pass,
}

#[inline(always)]
pub(crate) fn direct_kind(cfg: &ListenerConfig, pol: &Policy, ty: u32, port: u16) -> Direct {
    // One lookup per connect. Bit UDP marks the DNS listener's port (TCP and UDP share it).
    let bits = agent_port_bits(port);
    let dns = port == PORT_DNS || bits & agent_port::UDP != 0;
    if pol.mode == mode::DENY_ALL && dns {
        return Direct::Deny;
    }
    if ty == SOCK_STREAM && cfg.loopback == loopback::ALLOW && bits & agent_port::TCP != 0 {
        return Direct::Record;
    }
    Direct::Pass
}

/// Records a direct connection's identity (canonical `addr`, its `family`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_direct(
    ctx: *mut c_void,
    addr: [u32; 4],
    wire_addr: [u32; 4],
    port: u16,
    family: u16,
    sock_family: u16,
    pol: &Policy,
    uid: u32,
) -> bool {
    let cookie = cookie_of(ctx);
    let orig = OrigDst {
        // SAFETY: plain helper call without pointer arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        addr,
        wire_addr,
        port,
        family,
        sock_family,
        listener: ListenerKind::Http as u16,
        uid,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        policy_id: pol.policy_id,
        flags: orig_flags::DIRECT | (pol.mode << orig_flags::MODE_SHIFT),
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    IRON_ORIG_BY_COOKIE.insert(&cookie, &orig, 0).is_ok()
}

#[inline(always)]
pub(crate) fn sock_family_of(sa: *mut bpf_sock_addr) -> u16 {
    // SAFETY: ctx field read at a constant offset.
    if rd(unsafe { &raw const (*sa).family }) == u32::from(AF_INET6) {
        AF_INET6
    } else {
        AF_INET
    }
}

/// Governed task, IPv4 loopback destination. `Some(verdict)` ends the hook.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn direct4(
    sa: *mut bpf_sock_addr,
    cfg: &ListenerConfig,
    pol: &Policy,
    uid: u32,
    ty: u32,
    ip_be: u32,
    port: u16,
) -> Option<i32> {
    match direct_kind(cfg, pol, ty, port) {
        Direct::Deny => Some(deny(Counter::DenyLoopback)),
        Direct::Pass => None,
        Direct::Record => {
            let a = mapped4(ip_be);
            if record_direct(sa.cast(), a, a, port, AF_INET, sock_family_of(sa), pol, uid) {
                Some(ALLOW)
            } else {
                Some(deny(Counter::DenyRecordFailed))
            }
        }
    }
}

/// Governed task, local IPv6 destination (`::1`, `::`, or mapped IPv4 loopback).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn direct6(
    sa: *mut bpf_sock_addr,
    cfg: &ListenerConfig,
    pol: &Policy,
    uid: u32,
    ty: u32,
    w: [u32; 4],
    kind: V6Kind,
    port: u16,
) -> Option<i32> {
    match direct_kind(cfg, pol, ty, port) {
        Direct::Deny => Some(deny(Counter::DenyLoopback)),
        Direct::Pass => None,
        Direct::Record => {
            let family = if matches!(kind, V6Kind::Mapped(_)) {
                AF_INET
            } else {
                AF_INET6
            };
            if record_direct(sa.cast(), w, w, port, family, AF_INET6, pol, uid) {
                Some(ALLOW)
            } else {
                Some(deny(Counter::DenyRecordFailed))
            }
        }
    }
}

/// The policy recorded for exempt tasks (uid 0, the agent's uid, `exempt` identities).
pub(crate) const EXEMPT_POLICY: Policy = Policy {
    mode: mode::EXEMPT,
    policy_id: 0,
};

/// Exempt task, IPv4: always allowed; a TCP connect to the agent's port on loopback is recorded
/// (best effort) so the agent knows the peer is exempt rather than unidentifiable.
#[inline(always)]
pub(crate) fn exempt_direct4(sa: *mut bpf_sock_addr) -> i32 {
    // SAFETY: ctx field reads at constant offsets.
    let (ip_be, port_raw, ty) = unsafe {
        (
            rd(&raw const (*sa).user_ip4),
            rd(&raw const (*sa).user_port),
            rd(&raw const (*sa).type_),
        )
    };
    let port = u16::from_be(port_raw as u16);
    if ty == SOCK_STREAM && is_loopback4(u32::from_be(ip_be)) && agent_port(port, agent_port::TCP) {
        let a = mapped4(ip_be);
        let uid = bpf_get_current_uid_gid() as u32;
        let _ = record_direct(
            sa.cast(),
            a,
            a,
            port,
            AF_INET,
            sock_family_of(sa),
            &EXEMPT_POLICY,
            uid,
        );
    }
    ALLOW
}

/// Exempt task, IPv6: as [`exempt_direct4`] for `::1`, `::` and mapped IPv4 loopback.
#[inline(always)]
pub(crate) fn exempt_direct6(sa: *mut bpf_sock_addr) -> i32 {
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
    if ty != SOCK_STREAM || w[0] != 0 || w[1] != 0 {
        return ALLOW;
    }
    let h2 = u32::from_be(w[2]);
    let h3 = u32::from_be(w[3]);
    let (local, family) = if h2 == 0xffff {
        (is_loopback4(h3), AF_INET)
    } else {
        (h2 == 0 && h3 <= 1, AF_INET6)
    };
    if local && agent_port(port, agent_port::TCP) {
        let uid = bpf_get_current_uid_gid() as u32;
        let _ = record_direct(sa.cast(), w, w, port, family, AF_INET6, &EXEMPT_POLICY, uid);
    }
    ALLOW
}
