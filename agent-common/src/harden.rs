//! Map ABI of the hardening programs (issue 11): inbound binds, IP/IPv6 routing options, socket
//! families, unix socket destinations and the agent's self-protection. Kept apart from the
//! interception ABI so that the two evolve independently; both live in the same eBPF object and
//! pin directory, and the hardening programs decide who is governed with the same maps.

/// `Array<HardenConfig>`, one entry at index 0.
pub const MAP_HARDEN_CONFIG: &str = "IRON_HARDEN_CFG";
/// `HashMap<u16 port, u8>`: ports governed tasks may bind on non-loopback addresses.
pub const MAP_BIND_PORTS: &str = "IRON_BIND_PORTS";
/// `HashMap<UnixPath, u8>`: unix socket addresses governed tasks may connect or send to.
pub const MAP_UNIX_ALLOW: &str = "IRON_UNIX_ALLOW";
/// `HashMap<InodeKey, u8>`: files (and directories, whose direct children are covered too) that
/// governed tasks may not open.
pub const MAP_PROTECTED: &str = "IRON_PROTECTED";
/// `PerCpuArray<u64>` indexed by [`HardenCounter`].
pub const MAP_HARDEN_COUNTERS: &str = "IRON_HARDEN_CNT";

/// Every hardening map, in pin order.
pub const HARDEN_MAP_NAMES: [&str; 5] = [
    MAP_HARDEN_CONFIG,
    MAP_BIND_PORTS,
    MAP_UNIX_ALLOW,
    MAP_PROTECTED,
    MAP_HARDEN_COUNTERS,
];

pub const BIND_PORT_ENTRIES: u32 = 1024;
pub const UNIX_ALLOW_ENTRIES: u32 = 256;
pub const PROTECTED_ENTRIES: u32 = 256;
/// `sizeof(sockaddr_un.sun_path)`.
pub const UNIX_PATH_LEN: usize = 108;
/// How many agent listener ports [`HardenConfig::agent_ports`] holds (legacy, see there).
pub const AGENT_PORTS: usize = 8;

/// How a hardening program is loaded and attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardenKind {
    /// `cgroup/bind4`, `cgroup/bind6` (`CgroupSockAddr`), at the cgroup root.
    Bind,
    /// `cgroup/setsockopt` (`CgroupSockopt`), at the cgroup root.
    Setsockopt,
    /// `cgroup_skb/egress` (`CgroupSkb`), at the cgroup root.
    SkbEgress,
    /// BPF LSM program for the named hook (global; needs `bpf` in the active LSM list).
    Lsm(&'static str),
}

/// Hardening programs (function names, also their link pin names) and their kinds.
pub const HARDEN_PROGRAMS: [(&str, HardenKind); 11] = [
    ("iron_bind4", HardenKind::Bind),
    ("iron_bind6", HardenKind::Bind),
    ("iron_setsockopt", HardenKind::Setsockopt),
    ("iron_skb_egress", HardenKind::SkbEgress),
    ("iron_lsm_socket_create", HardenKind::Lsm("socket_create")),
    ("iron_lsm_socket_listen", HardenKind::Lsm("socket_listen")),
    ("iron_lsm_socket_connect", HardenKind::Lsm("socket_connect")),
    ("iron_lsm_socket_sendmsg", HardenKind::Lsm("socket_sendmsg")),
    ("iron_lsm_ptrace", HardenKind::Lsm("ptrace_access_check")),
    ("iron_lsm_bpf", HardenKind::Lsm("bpf")),
    ("iron_lsm_file_open", HardenKind::Lsm("file_open")),
];

/// Kernel struct field offsets (bytes) the LSM programs need, read from the running kernel's BTF
/// by the agent (the Rust eBPF toolchain has no CO-RE relocations). 0 = unknown: the check that
/// needs it is skipped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock_common.skc_family` (u16).
    pub skc_family: u32,
    /// `sock_common.skc_rcv_saddr` (IPv4 bound address).
    pub skc_rcv_saddr: u32,
    /// `sock_common.skc_v6_rcv_saddr` (IPv6 bound address).
    pub skc_v6_rcv_saddr: u32,
    /// `sock_common.skc_num` (bound local port, host order).
    pub skc_num: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `file.f_path` + `path.dentry`: the opened dentry, in one offset.
    pub file_dentry: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_inode`.
    pub dentry_inode: u32,
    /// `inode.i_ino` (unsigned long).
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev` (kernel `dev_t`: `MAJOR << 20 | MINOR`).
    pub sb_dev: u32,
    pub _pad: u32,
}

/// Flags of [`HardenConfig::flags`].
pub mod flags {
    /// Governed tasks may bind non-loopback addresses only on [`super::MAP_BIND_PORTS`] ports.
    pub const BIND_LOOPBACK_ONLY: u32 = 1;
    /// Unix socket destinations are checked against [`super::MAP_UNIX_ALLOW`].
    pub const UNIX_ALLOWLIST: u32 = 2;
    /// Self-protection (ptrace, /proc/<agent>/mem, bpf(), opening [`super::MAP_PROTECTED`]
    /// files) is on.
    pub const SELF_PROTECT: u32 = 4;
}

/// Values of [`MAP_PROTECTED`].
pub mod protect {
    /// Governed tasks may not open this inode.
    pub const FILE: u8 = 1;
    /// Governed tasks may open neither this directory nor anything directly in it (the check
    /// looks at the opened file's parent dentry, so files created later are covered too).
    pub const DIR: u8 = 2;
    /// May be opened even inside a [`DIR`] (the CA certificate, which clients must read).
    pub const PUBLIC: u8 = 3;
}

/// Value of [`MAP_HARDEN_CONFIG`]. All zero (before the agent writes it) means: no flags, no
/// agent ports; the socket-family and routing-option checks apply regardless.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardenConfig {
    pub flags: u32,
    /// The agent's process id (tgid) for self-protection; 0 = none.
    pub agent_tgid: u32,
    /// The agent's first listener ports (host order; 0 = unused slot). Read only by bind
    /// programs of earlier builds (an adopted installation); current ones check every port in
    /// `IRON_AGENT_PORTS` instead. Kept so the map value layout does not change.
    pub agent_ports: [u16; AGENT_PORTS],
    pub offsets: KernelOffsets,
}

/// Key of [`MAP_UNIX_ALLOW`]: a `sun_path` as the kernel sees it, zero padded. A pathname
/// socket ends at its first NUL; an abstract one starts with NUL and keeps its exact length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixPath {
    pub path: [u8; UNIX_PATH_LEN],
}

impl Default for UnixPath {
    fn default() -> Self {
        Self {
            path: [0; UNIX_PATH_LEN],
        }
    }
}

/// Key of [`MAP_PROTECTED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// Index of each counter in [`MAP_HARDEN_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardenCounter {
    /// bind on a non-loopback address refused.
    DenyBind = 0,
    /// bind on one of the agent's ports refused (squatting).
    DenyBindAgentPort = 1,
    /// listen on a socket not bound to loopback refused.
    DenyListen = 2,
    /// IP options / IPv6 routing or extension header option refused.
    DenySockopt = 3,
    /// socket family refused.
    DenyFamily = 4,
    /// unix socket destination refused.
    DenyUnix = 5,
    /// ptrace / /proc/<agent>/mem access to the agent refused.
    DenyPtrace = 6,
    /// bpf() refused.
    DenyBpf = 7,
    /// Egress packet of a governed socket with IPv4 options / IPv6 extension headers dropped.
    DenyPacketOptions = 8,
    /// Opening a protected file or directory (CA key, state directory) refused.
    DenyFileOpen = 9,
}

pub const HARDEN_COUNTER_COUNT: u32 = 10;

pub const HARDEN_COUNTERS: [HardenCounter; HARDEN_COUNTER_COUNT as usize] = [
    HardenCounter::DenyBind,
    HardenCounter::DenyBindAgentPort,
    HardenCounter::DenyListen,
    HardenCounter::DenySockopt,
    HardenCounter::DenyFamily,
    HardenCounter::DenyUnix,
    HardenCounter::DenyPtrace,
    HardenCounter::DenyBpf,
    HardenCounter::DenyPacketOptions,
    HardenCounter::DenyFileOpen,
];

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 56);
const _: () = assert!(core::mem::size_of::<HardenConfig>() == 8 + 2 * AGENT_PORTS + 56);
const _: () = assert!(core::mem::size_of::<UnixPath>() == UNIX_PATH_LEN);
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    use super::{HardenConfig, InodeKey, UnixPath};
    // SAFETY: #[repr(C)] integers and integer arrays only, no implicit padding (asserted above),
    // every bit pattern valid.
    unsafe impl aya::Pod for HardenConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UnixPath {}
    // SAFETY: as above.
    unsafe impl aya::Pod for InodeKey {}
}
