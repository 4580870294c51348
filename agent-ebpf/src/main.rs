//! eBPF programs for iron-agent's transparent interception, attached at the cgroup v2 root.
//!
//! For a *governed* task (see [`classify`]):
//! - `sock_create`: only TCP and UDP inet sockets may be created (no raw, ICMP, SCTP, MPTCP, ...).
//! - `connect4/6`: TCP to port 80/443 is rewritten to the agent's HTTP/HTTPS listener, UDP to port
//!   53 to its DNS listener; the original destination and the task identity are recorded under the
//!   socket cookie. Every other non-loopback destination is denied (EPERM).
//! - `sendmsg4/6`: the same for unconnected UDP (only port 53 passes, redirected).
//! - `recvmsg4/6`: DNS replies from the agent appear to come from the original resolver.
//! - `getpeername4/6`: the workload sees its original peer.
//! - `sock_ops`: when a redirected TCP connection is established, its entry is copied to a map keyed
//!   by the connection's 4-tuple, which the agent reads after `accept()`.
//!
//! Every entry point is a thin wrapper around a `try_*` function; decisions are reported through
//! per-CPU counters. Denials are also logged with aya-log at `debug`, for diagnosis only: the
//! agent sets `AYA_LOG_LEVEL` (a read-only global, frozen at load) to 0 unless `RUST_LOG` enables
//! `iron_agent::ebpf`, and the verifier then removes the logging branches as dead code, so the
//! programs cost the same per call as without it. Only the deny paths log (connect, sendmsg,
//! sock_create): one call site each keeps the programs small.
//!
//! Pitfalls this code avoids (see the eBPF recipe): context fields are read with volatile loads at
//! constant offsets (LLVM otherwise merges branch-dependent loads into a `ctx + phi` access that
//! the verifier rejects), `user_port` is written as a 4-byte store, and the sock_ops function is
//! not named `sockops`.
#![no_std]
#![no_main]

// One module per hook family; `maps` and the decision helpers are shared.
mod classify;
mod connect4;
mod connect6;
mod direct;
mod maps;
mod restore;
mod route;
mod sock_create;
mod sock_ops;

// Hardening programs (issue 11): inbound binds, routing options, LSM, packet backstop.
mod bind;
mod harden;
mod lsm;
mod skb;
mod sockopt;

// The names the hardening modules use.
pub(crate) use classify::{classify, decide};
pub(crate) use direct::agent_port_bits;
pub(crate) use maps::{IRON_GOVERNED_CGROUPS, config, rd};

// Return values of cgroup programs: 1 lets the operation proceed, 0 fails it with EPERM.
const ALLOW: i32 = 1;
const DENY: i32 = 0;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

const PORT_HTTP: u16 = 80;
const PORT_HTTPS: u16 = 443;
const PORT_DNS: u16 = 53;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
