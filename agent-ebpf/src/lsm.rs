//! BPF LSM programs (loaded only where `bpf` is in the active LSM list). Each one returns the
//! earlier LSM's verdict when that already refused, 0 to allow, `-EPERM` to refuse.
//!
//! - `socket_create`: governed tasks may create only AF_UNIX, AF_INET, AF_INET6 and
//!   NETLINK_ROUTE sockets (item 6; the cgroup `sock_create` hook only sees inet sockets).
//! - `socket_listen`: a governed socket may listen only when bound to loopback or to an allowed
//!   inbound port (item 4: `listen()` on an unbound socket autobinds to the wildcard address
//!   without passing the bind hooks).
//! - `socket_connect`, `socket_sendmsg`: unix socket destinations of governed tasks must be in
//!   the allowlist (item 7). The address is the kernel's copy of what the task passed, so a
//!   symlink or relative path to a denied socket is simply not on the list.
//! - `ptrace_access_check`: governed tasks cannot ptrace the agent or open its
//!   `/proc/<pid>/{mem,environ,...}` (item 12; those opens are ptrace access checks).
//! - `bpf`: governed tasks cannot call bpf() at all (item 12: the agent's maps and links).
//! - `file_open`: governed tasks cannot open the CA key or the agent's state directory (item 12):
//!   the opened inode, or its parent directory's, is looked up in `IRON_PROTECTED` by
//!   (superblock dev, inode number), so no path string is parsed and no loop is needed.
//!
//! Kernel structs are read with `bpf_probe_read_kernel` at offsets the agent takes from the
//! running kernel's BTF ([`agent_common::harden::KernelOffsets`]).

use agent_common::harden::{
    HardenConfig, HardenCounter, InodeKey, KernelOffsets, UNIX_PATH_LEN, UnixPath, flags, protect,
};
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};

use crate::harden::{
    IRON_BIND_PORTS, IRON_PROTECTED, IRON_UNIX_ALLOW, count, governed, harden_config,
};

const EPERM: i32 = 1;
const AF_UNIX: i32 = 1;
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_NETLINK: i32 = 16;
const NETLINK_ROUTE: i32 = 0;

#[inline(always)]
fn deny(c: HardenCounter) -> i32 {
    count(c);
    -EPERM
}

#[inline(always)]
fn read<T>(p: *const T) -> Option<T> {
    // SAFETY: probe read of kernel memory; a bad address yields an error, never a fault.
    unsafe { bpf_probe_read_kernel(p) }.ok()
}

#[inline(always)]
fn at<T>(base: usize, off: u32) -> *const T {
    (base + off as usize) as *const T
}

// ---------------------------------------------------------------------------------------------
// socket_create(int family, int type, int protocol, int kern)
// ---------------------------------------------------------------------------------------------

#[lsm(hook = "socket_create")]
pub fn iron_lsm_socket_create(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let family: i32 = ctx.arg(0);
    let protocol: i32 = ctx.arg(2);
    let kern: i32 = ctx.arg(3);
    let ok = family == AF_UNIX
        || family == AF_INET
        || family == AF_INET6
        || (family == AF_NETLINK && protocol == NETLINK_ROUTE);
    if kern != 0 || ok || !governed() {
        return 0;
    }
    deny(HardenCounter::DenyFamily)
}

// ---------------------------------------------------------------------------------------------
// socket_listen(struct socket *sock, int backlog)
// ---------------------------------------------------------------------------------------------

#[lsm(hook = "socket_listen")]
pub fn iron_lsm_socket_listen(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let sock: usize = ctx.arg(0);
    let Some(h) = harden_config() else {
        return 0;
    };
    if h.flags & flags::BIND_LOOPBACK_ONLY == 0 || h.offsets.socket_sk == 0 {
        return 0;
    }
    if listen_allowed(h, sock) || !governed() {
        return 0;
    }
    deny(HardenCounter::DenyListen)
}

#[inline(always)]
fn listen_allowed(h: &HardenConfig, sock: usize) -> bool {
    let o = &h.offsets;
    let Some(sk) = read::<usize>(at(sock, o.socket_sk)) else {
        return false;
    };
    if sk == 0 {
        return false;
    }
    let family = read::<u16>(at(sk, o.skc_family)).unwrap_or(0) as i32;
    let port = read::<u16>(at(sk, o.skc_num)).unwrap_or(0);
    let loopback = if family == AF_INET {
        let a = read::<u32>(at(sk, o.skc_rcv_saddr)).unwrap_or(0);
        (u32::from_be(a) >> 24) == 127
    } else if family == AF_INET6 {
        let w = read::<[u32; 4]>(at(sk, o.skc_v6_rcv_saddr)).unwrap_or([0; 4]);
        let (h2, h3) = (u32::from_be(w[2]), u32::from_be(w[3]));
        w[0] == 0 && w[1] == 0 && ((h2 == 0 && h3 == 1) || (h2 == 0xffff && (h3 >> 24) == 127))
    } else {
        // Unix sockets and the rest: not an inbound network channel.
        return true;
    };
    // SAFETY: the value is only tested for presence.
    loopback || (port != 0 && unsafe { IRON_BIND_PORTS.get(&port) }.is_some())
}

// ---------------------------------------------------------------------------------------------
// socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
// socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
// ---------------------------------------------------------------------------------------------

#[lsm(hook = "socket_connect")]
pub fn iron_lsm_socket_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let addr: usize = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    unix_check(addr, len)
}

#[lsm(hook = "socket_sendmsg")]
pub fn iron_lsm_socket_sendmsg(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let msg: usize = ctx.arg(1);
    // `struct msghdr` starts with `void *msg_name; int msg_namelen;` (kernel copy of the
    // address; NULL for a connected socket, which the connect check already covered).
    let Some(name) = read::<usize>(msg as *const usize) else {
        return 0;
    };
    if name == 0 {
        return 0;
    }
    let len = read::<i32>((msg + 8) as *const i32).unwrap_or(0);
    unix_check(name, len)
}

#[inline(always)]
fn unix_check(addr: usize, len: i32) -> i32 {
    if addr == 0 {
        return 0;
    }
    let family = read::<u16>(addr as *const u16).unwrap_or(0) as i32;
    if family != AF_UNIX {
        return 0;
    }
    let Some(h) = harden_config() else {
        return 0;
    };
    if h.flags & flags::UNIX_ALLOWLIST == 0 || !governed() {
        return 0;
    }
    let mut key = UnixPath::default();
    let n = (len - 2).clamp(0, UNIX_PATH_LEN as i32) as usize;
    if read_path(addr + 2, n, &mut key).is_none() {
        return deny(HardenCounter::DenyUnix);
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { IRON_UNIX_ALLOW.get(&key) }.is_some() {
        return 0;
    }
    deny(HardenCounter::DenyUnix)
}

/// Copies `sun_path` into `key` as the kernel interprets it: the caller's `n` bytes only (the
/// rest of the kernel's buffer is stale stack), and for a pathname socket up to the first NUL.
#[inline(always)]
fn read_path(src: usize, n: usize, key: &mut UnixPath) -> Option<()> {
    let raw = read::<[u8; UNIX_PATH_LEN]>(src as *const [u8; UNIX_PATH_LEN])?;
    let abstract_name = n > 0 && raw[0] == 0;
    let mut ended = false;
    let mut i = 0;
    while i < UNIX_PATH_LEN {
        let b = raw[i];
        if i >= n || (!abstract_name && b == 0) {
            ended = true;
        }
        key.path[i] = if ended { 0 } else { b };
        i += 1;
    }
    Some(())
}

// ---------------------------------------------------------------------------------------------
// ptrace_access_check(struct task_struct *child, unsigned int mode); bpf(int cmd, ...)
// ---------------------------------------------------------------------------------------------

#[lsm(hook = "ptrace_access_check")]
pub fn iron_lsm_ptrace(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let child: usize = ctx.arg(0);
    let Some(h) = harden_config() else {
        return 0;
    };
    if h.flags & flags::SELF_PROTECT == 0 || h.agent_tgid == 0 || h.offsets.task_tgid == 0 {
        return 0;
    }
    let tgid = read::<i32>(at(child, h.offsets.task_tgid)).unwrap_or(0) as u32;
    if tgid != h.agent_tgid || !governed() {
        return 0;
    }
    deny(HardenCounter::DenyPtrace)
}

#[lsm(hook = "bpf")]
pub fn iron_lsm_bpf(ctx: LsmContext) -> i32 {
    // bpf(int cmd, union bpf_attr *attr, unsigned int size, bool kernel), then the verdict.
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let Some(h) = harden_config() else {
        return 0;
    };
    if h.flags & flags::SELF_PROTECT == 0 || !governed() {
        return 0;
    }
    deny(HardenCounter::DenyBpf)
}

// ---------------------------------------------------------------------------------------------
// file_open(struct file *file)
// ---------------------------------------------------------------------------------------------

#[lsm(hook = "file_open")]
pub fn iron_lsm_file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: usize = ctx.arg(0);
    let Some(h) = harden_config() else {
        return 0;
    };
    // `sb_dev` is the last offset filled: 0 means the group is missing (see btf.rs).
    if h.flags & flags::SELF_PROTECT == 0 || h.offsets.sb_dev == 0 {
        return 0;
    }
    // Every open on the host passes here: the map lookups come first, the governed test (a
    // cgroup ancestry walk) only for a protected file.
    if !protected(&h.offsets, file) || !governed() {
        return 0;
    }
    deny(HardenCounter::DenyFileOpen)
}

/// Whether `file` is a protected inode, or sits directly in a protected directory (and is not
/// marked public).
#[inline(always)]
fn protected(o: &KernelOffsets, file: usize) -> bool {
    let Some(inode) = read::<usize>(at(file, o.file_inode)) else {
        return false;
    };
    let Some(key) = inode_key(o, inode) else {
        return false;
    };
    // SAFETY: the value is copied out immediately.
    match unsafe { IRON_PROTECTED.get(&key) }.copied() {
        Some(protect::PUBLIC) => return false,
        Some(_) => return true,
        None => {}
    }
    let Some(dentry) = read::<usize>(at(file, o.file_dentry)) else {
        return false;
    };
    let Some(parent) = read::<usize>(at(dentry, o.dentry_parent)) else {
        return false;
    };
    // The root of a mount is its own parent: nothing above it to check.
    if parent == 0 || parent == dentry {
        return false;
    }
    let Some(pinode) = read::<usize>(at(parent, o.dentry_inode)) else {
        return false;
    };
    let Some(pkey) = inode_key(o, pinode) else {
        return false;
    };
    // SAFETY: as above.
    unsafe { IRON_PROTECTED.get(&pkey) }.copied() == Some(protect::DIR)
}

#[inline(always)]
fn inode_key(o: &KernelOffsets, inode: usize) -> Option<InodeKey> {
    if inode == 0 {
        return None;
    }
    let ino = read::<u64>(at(inode, o.inode_ino))?;
    let sb = read::<usize>(at(inode, o.inode_sb))?;
    if sb == 0 {
        return None;
    }
    let dev = read::<u32>(at(sb, o.sb_dev))?;
    Some(InodeKey { ino, dev, _pad: 0 })
}
