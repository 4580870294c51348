//! Types shared between the eBPF programs (`agent-ebpf`) and the userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data so that both sides agree on the layout of map keys
//! and values. The `user` feature adds the userspace-only trait impls (aya's `Pod`) once the eBPF
//! interception lands.
#![no_std]

/// Listener roles a redirected socket can be sent to. The discriminants are part of the map ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Http = 0,
    Https = 1,
    Dns = 2,
}
