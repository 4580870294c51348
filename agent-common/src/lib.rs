//! Types shared between the eBPF programs (`agent-ebpf`) and the userspace agent.
//!
//! Everything here is `#[repr(C)]` plain data so that both sides agree on the layout of map keys
//! and values. Every struct is laid out without implicit padding (explicit `_pad` fields where
//! needed): map keys are compared byte for byte by the kernel, and uninitialised padding would
//! make lookups miss. The `user` feature adds `aya::Pod` impls for the userspace side.
//!
//! Address convention: every address is 16 bytes laid out like `in6_addr` (network byte order, as
//! four `u32` words in memory order); IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`).
//! AF_INET and dual-stack AF_INET6 sockets therefore produce identical keys. Ports are host order.
#![no_std]

pub mod harden;

/// Listener roles a redirected socket can be sent to. The discriminants are part of the map ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Http = 0,
    Https = 1,
    Dns = 2,
    /// A configured PostgreSQL upstream, sent to the proxy listener ([`MAP_DB_REDIRECTS`]).
    Postgres = 3,
}

/// Default bpffs directory holding the pinned maps and links.
pub const PIN_DIR: &str = "/sys/fs/bpf/iron-agent";
/// Sub-directory of the pin dir for maps.
pub const PIN_MAPS_SUBDIR: &str = "maps";
/// Sub-directory of the pin dir for program links.
pub const PIN_LINKS_SUBDIR: &str = "links";

// Map names (the ELF symbol names of the maps in agent-ebpf).
/// `Array<ListenerConfig>`, one entry at index 0.
pub const MAP_CONFIG: &str = "IRON_CONFIG";
/// `HashMap<u32 uid, Policy>`.
pub const MAP_UID_POLICY: &str = "IRON_UID_POLICY";
/// `HashMap<u64 cgroup id, Policy>`: governed cgroup subtrees (the id of the subtree's root).
pub const MAP_GOVERNED_CGROUPS: &str = "IRON_GOVERNED_CGROUPS";
/// `LruHashMap<u64 socket cookie, OrigDst>`: written at connect/sendmsg, read by recvmsg,
/// getpeername and sock_ops.
pub const MAP_ORIG_BY_COOKIE: &str = "IRON_ORIG_BY_COOKIE";
/// `LruHashMap<SockKey, OrigDst>`: written by sock_ops when a redirected TCP connection is
/// established, read and deleted by the agent after `accept()`.
pub const MAP_ORIG_BY_TUPLE: &str = "IRON_ORIG_BY_TUPLE";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "IRON_COUNTERS";

/// `HashMap<DestKey, DbRedirect>`: database destinations (a configured PostgreSQL upstream's
/// address and port) whose governed TCP connects go to the PostgreSQL proxy listener.
pub const MAP_DB_REDIRECTS: &str = "IRON_DB_REDIRECTS";

/// `HashMap<u32 port, u32 protocols>`: the agent's own listening ports ([`agent_port`] bits).
/// A governed or exempt task's TCP connect to one of them on a loopback address is recorded
/// like a redirect (flag [`orig_flags::DIRECT`]), so the agent identifies direct peers the way
/// the kernel knows them.
pub const MAP_AGENT_PORTS: &str = "IRON_AGENT_PORTS";

/// All map names, in pin order.
pub const MAP_NAMES: [&str; 8] = [
    MAP_CONFIG,
    MAP_UID_POLICY,
    MAP_GOVERNED_CGROUPS,
    MAP_ORIG_BY_COOKIE,
    MAP_ORIG_BY_TUPLE,
    MAP_COUNTERS,
    MAP_DB_REDIRECTS,
    MAP_AGENT_PORTS,
];

/// Capacity of the agent-port map.
pub const AGENT_PORT_ENTRIES: u32 = 64;

/// Value bits of [`MAP_AGENT_PORTS`].
pub mod agent_port {
    /// A TCP listener (HTTP, HTTPS, tunnel, DNS over TCP).
    pub const TCP: u32 = 1;
    /// The UDP DNS listener.
    pub const UDP: u32 = 2;
}

/// [`OrigDst::flags`].
pub mod orig_flags {
    /// Not redirected: the task connected to one of the agent's ports itself. `addr`/`port` are
    /// that listener; the identity fields say who connected.
    pub const DIRECT: u32 = 1;
    /// The task's [`crate::mode`] sits in bits 8..16 of the flags.
    pub const MODE_SHIFT: u32 = 8;
}

/// Capacity of the two original-destination maps. LRU, so entries of connections the agent never
/// accepted (aborted connects) age out without a garbage collector.
pub const ORIG_MAP_ENTRIES: u32 = 65536;
/// Capacity of the per-uid policy map.
pub const UID_POLICY_ENTRIES: u32 = 65536;
/// Capacity of the governed-cgroup map.
pub const GOVERNED_CGROUP_ENTRIES: u32 = 4096;
/// Capacity of the database-destination map.
pub const DB_REDIRECT_ENTRIES: u32 = 1024;
/// How many cgroup ancestor levels the programs inspect when deciding whether a task is inside a
/// governed subtree. Deeper cgroups are matched on their first `MAX_CGROUP_DEPTH` levels only.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// Kind of cgroup program, so userspace knows how to load and attach each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgKind {
    /// `cgroup/sock_create` (`CgroupSock`).
    SockCreate,
    /// `cgroup/<hook>` (`CgroupSockAddr`).
    SockAddr,
    /// `sockops` (`SockOps`).
    SockOps,
}

/// Program (function) names in the eBPF object and their kinds. The names are also the link pin
/// file names. Note the sock_ops one must not be called `sockops` (it would clash with its ELF
/// section symbol).
pub const PROGRAMS: [(&str, ProgKind); 10] = [
    ("iron_sock_create", ProgKind::SockCreate),
    ("iron_connect4", ProgKind::SockAddr),
    ("iron_connect6", ProgKind::SockAddr),
    ("iron_sendmsg4", ProgKind::SockAddr),
    ("iron_sendmsg6", ProgKind::SockAddr),
    ("iron_recvmsg4", ProgKind::SockAddr),
    ("iron_recvmsg6", ProgKind::SockAddr),
    ("iron_getpeername4", ProgKind::SockAddr),
    ("iron_getpeername6", ProgKind::SockAddr),
    ("iron_sock_ops", ProgKind::SockOps),
];

/// `AF_INET` as stored in [`OrigDst::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6` as stored in [`OrigDst::family`].
pub const AF_INET6: u16 = 10;

/// Interception mode of a uid or governed cgroup.
pub mod mode {
    /// TCP 80/443 and UDP 53 are redirected to the agent, everything else non-loopback is denied.
    pub const REDIRECT: u32 = 0;
    /// Every non-loopback TCP/UDP operation is denied (no redirect).
    pub const DENY_ALL: u32 = 1;
    /// Not governed: nothing is redirected or denied.
    pub const EXEMPT: u32 = 2;
}

/// Loopback policy for governed tasks ([`ListenerConfig::loopback`]).
pub mod loopback {
    /// Loopback (127/8, ::1, unspecified) stays reachable.
    pub const ALLOW: u32 = 0;
    /// Loopback is denied (except for the redirect to the agent's own listeners, which is applied
    /// by the programs themselves and never re-checked).
    pub const DENY: u32 = 1;
}

/// Policy value of [`MAP_UID_POLICY`] and [`MAP_GOVERNED_CGROUPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// One of the [`mode`] constants.
    pub mode: u32,
    /// Opaque id of the agent-side policy that applies; copied into [`OrigDst::policy_id`].
    pub policy_id: u32,
}

/// An IPv4 listener the programs redirect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint4 {
    /// IPv4 address, network byte order (as in `bpf_sock_addr.user_ip4`).
    pub addr: u32,
    /// Port, host order. 0 = no listener: matching traffic is denied instead of redirected.
    pub port: u16,
    pub _pad: u16,
}

/// An IPv6 listener the programs redirect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint6 {
    /// IPv6 address, network byte order words (as in `bpf_sock_addr.user_ip6`).
    pub addr: [u32; 4],
    /// Port, host order. 0 = no listener: matching native-IPv6 traffic is denied.
    pub port: u16,
    pub _pad: u16,
}

/// Value of [`MAP_CONFIG`] (index 0). Until userspace writes it the map holds zeroes, which the
/// programs treat as "no listeners": governed traffic is denied (fails closed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerConfig {
    pub http4: Endpoint4,
    pub https4: Endpoint4,
    pub dns4: Endpoint4,
    pub http6: Endpoint6,
    pub https6: Endpoint6,
    pub dns6: Endpoint6,
    /// The agent's own uid: never governed by uid (its upstream connections must not loop back).
    pub agent_uid: u32,
    /// [`mode`] for uids that are in neither the uid map nor a governed cgroup (and are not 0 or
    /// the agent's uid, which are exempt unless listed in the uid map).
    pub default_mode: u32,
    /// Policy id reported for uids governed by `default_mode`.
    pub default_policy_id: u32,
    /// One of the [`loopback`] constants.
    pub loopback: u32,
}

/// Original destination and identity of a redirected socket. Value of [`MAP_ORIG_BY_COOKIE`] and
/// [`MAP_ORIG_BY_TUPLE`]. 80 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// Id of the task's cgroup (v2) at connect time.
    pub cgroup_id: u64,
    /// Canonical destination: IPv4 (also IPv4 carried in mapped/compat/NAT64/6to4 IPv6 forms) is
    /// stored IPv4-mapped; see the crate docs.
    pub addr: [u32; 4],
    /// The destination exactly as the workload passed it (what getpeername shows it).
    pub wire_addr: [u32; 4],
    /// Destination port, host order.
    pub port: u16,
    /// Family of the canonical destination ([`AF_INET`] or [`AF_INET6`]).
    pub family: u16,
    /// Family of the socket ([`AF_INET`] or [`AF_INET6`]).
    pub sock_family: u16,
    /// [`ListenerKind`] the socket was redirected to.
    pub listener: u16,
    /// Task uid (kernel uid) at connect/sendmsg time.
    pub uid: u32,
    /// Task tgid (the process id) at connect/sendmsg time.
    pub pid: u32,
    /// Policy id of the rule that governed the task.
    pub policy_id: u32,
    /// [`orig_flags`]: 0 for a redirected connection.
    pub flags: u32,
    /// Task command name (`comm`), NUL-padded.
    pub comm: [u8; 16],
}

/// Key of [`MAP_ORIG_BY_TUPLE`]: the workload side of a redirected TCP connection. As seen by the
/// agent after `accept()`: `src` = `peer_addr()`, `dst` = `local_addr()`. 36 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub src_port: u16,
    pub dst_port: u16,
}

/// Key of [`MAP_DB_REDIRECTS`]: a destination in the canonical address form (see the crate
/// docs) and its port (host order). 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub _pad: u16,
}

/// Value of [`MAP_DB_REDIRECTS`]: the listener to send the connection to (IPv4 and native
/// IPv6 forms, as in [`ListenerConfig`]). 28 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbRedirect {
    pub ep4: Endpoint4,
    pub ep6: Endpoint6,
}

/// Index of each counter in [`MAP_COUNTERS`] (per-CPU `u64`s; userspace sums them).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// TCP connect redirected to the HTTP listener (port 80).
    RedirectHttp = 0,
    /// TCP connect redirected to the HTTPS listener (port 443).
    RedirectHttps = 1,
    /// Connected UDP (connect) to port 53 redirected to the DNS listener.
    RedirectDnsConnect = 2,
    /// Unconnected UDP (sendmsg) to port 53 redirected to the DNS listener.
    RedirectDnsSendmsg = 3,
    /// TCP connect denied.
    DenyTcp = 4,
    /// UDP connect/sendmsg denied.
    DenyUdp = 5,
    /// Loopback destination denied (loopback policy `deny`).
    DenyLoopback = 6,
    /// Socket creation denied (raw, ICMP, SCTP, MPTCP, ...).
    DenySockCreate = 7,
    /// Denied because no listener is configured for the family/kind, or the config is missing.
    DenyNoListener = 8,
    /// Denied because the original destination could not be recorded (map insert failed).
    DenyRecordFailed = 9,
    /// UDP reply source restored by recvmsg.
    DnsReplyRestored = 10,
    /// getpeername answer restored.
    PeerRestored = 11,
    /// sock_ops copied an entry into the 4-tuple map.
    TupleRecorded = 12,
    /// Connect/sendmsg of a socket type other than TCP/UDP stream/datagram denied.
    DenyOtherType = 13,
    /// TCP connect to a configured database destination redirected to the PostgreSQL proxy.
    RedirectPostgres = 14,
}

/// Number of counters (length of [`MAP_COUNTERS`]).
pub const COUNTER_COUNT: u32 = 15;

/// Every counter, in index order.
pub const COUNTERS: [Counter; COUNTER_COUNT as usize] = [
    Counter::RedirectHttp,
    Counter::RedirectHttps,
    Counter::RedirectDnsConnect,
    Counter::RedirectDnsSendmsg,
    Counter::DenyTcp,
    Counter::DenyUdp,
    Counter::DenyLoopback,
    Counter::DenySockCreate,
    Counter::DenyNoListener,
    Counter::DenyRecordFailed,
    Counter::DnsReplyRestored,
    Counter::PeerRestored,
    Counter::TupleRecorded,
    Counter::DenyOtherType,
    Counter::RedirectPostgres,
];

// The layouts are ABI between the two sides; catch accidental changes (and implicit padding) at
// compile time.
const _: () = assert!(core::mem::size_of::<Policy>() == 8);
const _: () = assert!(core::mem::size_of::<Endpoint4>() == 8);
const _: () = assert!(core::mem::size_of::<Endpoint6>() == 20);
const _: () = assert!(core::mem::size_of::<ListenerConfig>() == 3 * 8 + 3 * 20 + 4 * 4);
const _: () = assert!(core::mem::size_of::<OrigDst>() == 8 + 16 + 16 + 4 * 2 + 4 * 4 + 16);
const _: () = assert!(core::mem::size_of::<SockKey>() == 36);
const _: () = assert!(core::mem::size_of::<DestKey>() == 20);
const _: () = assert!(core::mem::size_of::<DbRedirect>() == 28);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all impls below): the types are #[repr(C)], contain only integers and integer
    // arrays, have no implicit padding (asserted above), and every bit pattern is valid, which is
    // what aya::Pod requires for copying them to and from kernel maps.
    #[allow(unsafe_code)]
    mod impls {
        use crate::{DbRedirect, DestKey, ListenerConfig, OrigDst, Policy, SockKey};
        // SAFETY: see the module comment.
        unsafe impl aya::Pod for Policy {}
        // SAFETY: see the module comment.
        unsafe impl aya::Pod for ListenerConfig {}
        // SAFETY: see the module comment.
        unsafe impl aya::Pod for OrigDst {}
        // SAFETY: see the module comment.
        unsafe impl aya::Pod for SockKey {}
        // SAFETY: see the module comment.
        unsafe impl aya::Pod for DestKey {}
        // SAFETY: see the module comment.
        unsafe impl aya::Pod for DbRedirect {}
    }
}
