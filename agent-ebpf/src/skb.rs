//! `cgroup_skb/egress` backstop for issue 11 item 3: IPv4 options and IPv6 hop-by-hop, routing
//! and destination-options headers can also be attached per packet (`sendmsg` ancillary data such
//! as `IP_RETOPTS`), which no setsockopt hook sees. Packets of governed sockets that carry them are
//! dropped (the sender gets `EPERM`). Ordinary packets cost one header byte load.

use agent_common::{MAX_CGROUP_DEPTH, harden::HardenCounter, mode};
use aya_ebpf::{
    helpers::generated::bpf_skb_ancestor_cgroup_id, macros::cgroup_skb, programs::SkBuffContext,
};

use crate::harden::count;
use crate::{IRON_GOVERNED_CGROUPS, config, decide};

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_DEST: u8 = 60;

#[cgroup_skb(egress)]
pub fn iron_skb_egress(ctx: SkBuffContext) -> i32 {
    let proto = u32::from(u16::from_be(ctx.skb.protocol() as u16));
    let options = if proto == ETH_P_IP {
        // Version/IHL: a header longer than 5 words carries options.
        matches!(ctx.load::<u8>(0), Ok(b) if b & 0x0f > 5)
    } else if proto == ETH_P_IPV6 {
        matches!(ctx.load::<u8>(6), Ok(n) if n == NEXTHDR_HOP || n == NEXTHDR_ROUTING || n == NEXTHDR_DEST)
    } else {
        false
    };
    // 1 = pass, 0 = drop.
    if !options || !socket_governed(&ctx) {
        return 1;
    }
    count(HardenCounter::DenyPacketOptions);
    0
}

/// [`crate::classify`] for a packet: the socket's cgroup and owner uid stand in for the task's
/// (the packet may be sent from softirq context, where there is no meaningful current task).
#[inline(always)]
fn socket_governed(ctx: &SkBuffContext) -> bool {
    let Some(cfg) = config() else {
        return false;
    };
    let mut innermost = None;
    let mut level: u32 = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: helper call on the program's own context.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb.cast(), level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out immediately; `Policy` is plain data.
        if let Some(p) = unsafe { IRON_GOVERNED_CGROUPS.get(&id) } {
            innermost = Some(*p);
        }
        level += 1;
    }
    decide(cfg, innermost, ctx.get_socket_uid()).is_some_and(|p| p.mode != mode::EXEMPT)
}
