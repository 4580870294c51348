//! `cgroup/bind4`, `cgroup/bind6`: governed tasks may bind loopback addresses only (issue 11
//! item 4: a listener on a public address is a two-way channel nothing inspects), except on
//! ports listed in `intercept.inbound.ports`, and never on one of the agent's listener ports
//! (item 10: while the agent is down, a squatter would receive other users' redirected traffic,
//! or the operator's management API key). The agent's ports are those of `IRON_AGENT_PORTS`,
//! which has room for every listener (the fixed slots of `HardenConfig::agent_ports` did not).

use agent_common::harden::{HardenCounter, flags};
use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};

use crate::harden::{IRON_BIND_PORTS, count, governed, harden_config};
use crate::{ALLOW, DENY, agent_port_bits, rd};

#[cgroup_sock_addr(bind4)]
pub fn iron_bind4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: ctx field reads at constant offsets.
    let (ip_be, port_raw) = unsafe {
        (
            rd(&raw const (*sa).user_ip4),
            rd(&raw const (*sa).user_port),
        )
    };
    let ip = u32::from_be(ip_be);
    decide((ip >> 24) == 127, u16::from_be(port_raw as u16))
}

#[cgroup_sock_addr(bind6)]
pub fn iron_bind6(ctx: SockAddrContext) -> i32 {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: ctx field reads at constant offsets, one 4-byte word at a time.
    let (w0, w1, w2, w3, port_raw) = unsafe {
        (
            rd(&raw const (*sa).user_ip6[0]),
            rd(&raw const (*sa).user_ip6[1]),
            rd(&raw const (*sa).user_ip6[2]),
            rd(&raw const (*sa).user_ip6[3]),
            rd(&raw const (*sa).user_port),
        )
    };
    let (h2, h3) = (u32::from_be(w2), u32::from_be(w3));
    // `::1`, or `::ffff:127.x.y.z` (a dual-stack socket bound to IPv4 loopback).
    let loopback = w0 == 0 && w1 == 0 && ((h2 == 0 && h3 == 1) || (h2 == 0xffff && (h3 >> 24) == 127));
    decide(loopback, u16::from_be(port_raw as u16))
}

#[inline(always)]
fn decide(loopback: bool, port: u16) -> i32 {
    let Some(h) = harden_config() else {
        return ALLOW;
    };
    let squat = port != 0 && agent_port_bits(port) != 0;
    let public = !loopback && h.flags & flags::BIND_LOOPBACK_ONLY != 0;
    if !squat && !public {
        return ALLOW;
    }
    if !governed() {
        return ALLOW;
    }
    if squat {
        count(HardenCounter::DenyBindAgentPort);
        return DENY;
    }
    // SAFETY: the value is only tested for presence.
    if port != 0 && unsafe { IRON_BIND_PORTS.get(&port) }.is_some() {
        return ALLOW;
    }
    count(HardenCounter::DenyBind);
    DENY
}
