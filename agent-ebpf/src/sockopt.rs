//! `cgroup/setsockopt`: governed tasks may not set IPv4 options (source routing) or IPv6
//! routing / extension headers (issue 11 item 3): with them a packet is routed to an address the
//! connect/sendmsg hooks never saw.

use agent_common::harden::HardenCounter;
use aya_ebpf::{macros::cgroup_sockopt, programs::SockoptContext};

use crate::harden::{count, governed};

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const IP_OPTIONS: i32 = 4;
// IPV6_2292HOPOPTS, IPV6_2292DSTOPTS, IPV6_2292RTHDR, IPV6_2292PKTOPTIONS.
const IPV6_2292_FIRST: i32 = 3;
const IPV6_2292_LAST: i32 = 6;
// IPV6_HOPOPTS, IPV6_RTHDRDSTOPTS, (56: IPV6_RECVRTHDR is harmless but in range), IPV6_RTHDR,
// (58: IPV6_RECVDSTOPTS), IPV6_DSTOPTS.
const IPV6_EXT_FIRST: i32 = 54;
const IPV6_EXT_LAST: i32 = 59;
const IPV6_RECVRTHDR: i32 = 56;
const IPV6_RECVDSTOPTS: i32 = 58;

#[cgroup_sockopt(setsockopt)]
pub fn iron_setsockopt(ctx: SockoptContext) -> i32 {
    let so = ctx.sockopt;
    // SAFETY: ctx field reads at constant offsets.
    let (level, name) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*so).level),
            core::ptr::read_volatile(&raw const (*so).optname),
        )
    };
    let routing = (level == SOL_IP && name == IP_OPTIONS)
        || (level == SOL_IPV6
            && ((IPV6_2292_FIRST..=IPV6_2292_LAST).contains(&name)
                || ((IPV6_EXT_FIRST..=IPV6_EXT_LAST).contains(&name)
                    && name != IPV6_RECVRTHDR
                    && name != IPV6_RECVDSTOPTS)));
    // 1 = let the kernel handle the option unchanged; 0 = EPERM.
    if !routing || !governed() {
        return 1;
    }
    count(HardenCounter::DenySockopt);
    0
}
