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

use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use agent_common::{
    AF_INET, AF_INET6, COUNTER_COUNT, Counter, DB_REDIRECT_ENTRIES, DbRedirect, DestKey, Endpoint4,
    Endpoint6, GOVERNED_CGROUP_ENTRIES, ListenerConfig, ListenerKind, MAX_CGROUP_DEPTH,
    ORIG_MAP_ENTRIES, OrigDst, Policy, SockKey, UID_POLICY_ENTRIES, loopback, mode,
};
use agent_common::{AGENT_PORT_ENTRIES, agent_port, orig_flags};
use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, bpf_sock, bpf_sock_addr},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_socket_cookie,
        },
    },
    macros::{cgroup_sock, cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, SockContext, SockOpsContext},
};
use aya_log_ebpf::debug;

// Hardening programs (issue 11), kept out of this file: inbound binds, routing options, LSM.
mod bind;
mod harden;
mod lsm;
mod skb;
mod sockopt;

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

#[map]
static IRON_CONFIG: Array<ListenerConfig> = Array::with_max_entries(1, 0);
#[map]
static IRON_UID_POLICY: HashMap<u32, Policy> = HashMap::with_max_entries(UID_POLICY_ENTRIES, 0);
#[map]
static IRON_GOVERNED_CGROUPS: HashMap<u64, Policy> =
    HashMap::with_max_entries(GOVERNED_CGROUP_ENTRIES, 0);
#[map]
static IRON_ORIG_BY_COOKIE: LruHashMap<u64, OrigDst> =
    LruHashMap::with_max_entries(ORIG_MAP_ENTRIES, 0);
#[map]
static IRON_ORIG_BY_TUPLE: LruHashMap<SockKey, OrigDst> =
    LruHashMap::with_max_entries(ORIG_MAP_ENTRIES, 0);
#[map]
static IRON_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);
#[map]
static IRON_DB_REDIRECTS: HashMap<DestKey, DbRedirect> =
    HashMap::with_max_entries(DB_REDIRECT_ENTRIES, 0);
// Direct connections to the agent's own listeners (see the section at the end of the file).
#[map]
static IRON_AGENT_PORTS: HashMap<u32, u32> = HashMap::with_max_entries(AGENT_PORT_ENTRIES, 0);

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

#[cgroup_sock(sock_create)]
pub fn iron_sock_create(ctx: SockContext) -> i32 {
    let verdict = try_sock_create(ctx.sock);
    if verdict == DENY {
        let sk = ctx.sock;
        // SAFETY: ctx field reads at constant offsets (evaluated only when logging is on).
        debug!(
            &ctx,
            "sock_create denied: uid {} type {} protocol {}",
            bpf_get_current_uid_gid() as u32,
            rd(unsafe { &raw const (*sk).type_ }),
            rd(unsafe { &raw const (*sk).protocol })
        );
    }
    verdict
}

#[cgroup_sock_addr(connect4)]
pub fn iron_connect4(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect4(ctx.sock_addr, false);
    if verdict == DENY {
        log_deny4(&ctx, "connect4");
    }
    verdict
}

#[cgroup_sock_addr(sendmsg4)]
pub fn iron_sendmsg4(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect4(ctx.sock_addr, true);
    if verdict == DENY {
        log_deny4(&ctx, "sendmsg4");
    }
    verdict
}

#[cgroup_sock_addr(connect6)]
pub fn iron_connect6(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect6(ctx.sock_addr, false);
    if verdict == DENY {
        log_deny6(&ctx, "connect6");
    }
    verdict
}

#[cgroup_sock_addr(sendmsg6)]
pub fn iron_sendmsg6(ctx: SockAddrContext) -> i32 {
    let verdict = try_connect6(ctx.sock_addr, true);
    if verdict == DENY {
        log_deny6(&ctx, "sendmsg6");
    }
    verdict
}

/// `debug` line for a denied IPv4 destination (a denied call was not rewritten: the fields are
/// still the workload's).
#[inline(always)]
fn log_deny4(ctx: &SockAddrContext, hook: &str) {
    let sa = ctx.sock_addr;
    // SAFETY: ctx field reads at constant offsets (evaluated only when logging is on).
    debug!(
        ctx,
        "{} denied: uid {} to {:i}:{}",
        hook,
        bpf_get_current_uid_gid() as u32,
        u32::from_be(rd(unsafe { &raw const (*sa).user_ip4 })),
        u16::from_be(rd(unsafe { &raw const (*sa).user_port }) as u16)
    );
}

/// `debug` line for a denied IPv6 destination.
#[inline(always)]
fn log_deny6(ctx: &SockAddrContext, hook: &str) {
    let sa = ctx.sock_addr;
    // SAFETY: ctx field reads at constant offsets, one 4-byte word at a time.
    let w = unsafe {
        [
            rd(&raw const (*sa).user_ip6[0]),
            rd(&raw const (*sa).user_ip6[1]),
            rd(&raw const (*sa).user_ip6[2]),
            rd(&raw const (*sa).user_ip6[3]),
        ]
    };
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let q = w[i].to_ne_bytes();
        b[4 * i] = q[0];
        b[4 * i + 1] = q[1];
        b[4 * i + 2] = q[2];
        b[4 * i + 3] = q[3];
        i += 1;
    }
    debug!(
        ctx,
        "{} denied: uid {} to [{:i}]:{}",
        hook,
        bpf_get_current_uid_gid() as u32,
        b,
        u16::from_be(rd(unsafe { &raw const (*sa).user_port }) as u16)
    );
}

#[cgroup_sock_addr(recvmsg4)]
pub fn iron_recvmsg4(ctx: SockAddrContext) -> i32 {
    try_restore4(ctx.sock_addr, true);
    // recvmsg programs must return 1; anything else is rejected at load time.
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn iron_recvmsg6(ctx: SockAddrContext) -> i32 {
    try_restore6(ctx.sock_addr, true);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn iron_getpeername4(ctx: SockAddrContext) -> i32 {
    try_restore4(ctx.sock_addr, false);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn iron_getpeername6(ctx: SockAddrContext) -> i32 {
    try_restore6(ctx.sock_addr, false);
    ALLOW
}

#[sock_ops]
pub fn iron_sock_ops(ctx: SockOpsContext) -> u32 {
    try_sock_ops(&ctx);
    1
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = IRON_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot returned by the kernel for this CPU; programs run with migration
        // disabled, so no other writer touches it concurrently.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn deny(c: Counter) -> i32 {
    count(c);
    DENY
}

/// Reads a `u32` context field at a constant offset (see the crate docs on why volatile).
#[inline(always)]
fn rd(p: *const u32) -> u32 {
    // SAFETY: `p` points into the program context, which the verifier checks at load time.
    unsafe { read_volatile(p) }
}

#[inline(always)]
fn wr(p: *mut u32, v: u32) {
    // SAFETY: as for `rd`; writes are limited to the fields the attach type permits.
    unsafe { write_volatile(p, v) }
}

#[inline(always)]
fn config() -> Option<&'static ListenerConfig> {
    IRON_CONFIG.get(0)
}

/// Decides whether the current task is governed and by which policy. `None` = exempt.
///
/// Order: a governed cgroup subtree wins over the uid (setuid or root inside a governed cgroup
/// stays governed); then the uid map; then uid 0 and the agent's own uid are exempt; everything
/// else gets the configured default mode.
#[inline(always)]
fn classify(cfg: &ListenerConfig) -> Option<(Policy, u32)> {
    let uid = bpf_get_current_uid_gid() as u32;
    // Level 0 is the root cgroup: walking down, the last listed ancestor is the innermost.
    let mut innermost: Option<Policy> = None;
    let mut level: u32 = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: plain helper call without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out immediately; `Policy` is plain data.
        if let Some(p) = unsafe { IRON_GOVERNED_CGROUPS.get(&id) } {
            innermost = Some(*p);
        }
        level += 1;
    }
    let p = decide(cfg, innermost, uid)?;
    governed(p, uid)
}

/// Identity precedence (docs/identities.md), shared with the packet backstop: the innermost
/// listed cgroup decides, whatever the uid, except that an `exempt` cgroup does not exempt a
/// uid listed with another mode (a governed user's work that lands in an exempt cgroup, such as
/// a cron job in `cron.service`, stays governed); then the uid's entry; then root and the
/// agent are exempt; then `default`. `None`: exempt.
#[inline(always)]
pub(crate) fn decide(cfg: &ListenerConfig, cgroup: Option<Policy>, uid: u32) -> Option<Policy> {
    // SAFETY: the value is copied out immediately; `Policy` is plain data.
    let by_uid = unsafe { IRON_UID_POLICY.get(&uid) }.copied();
    if let Some(c) = cgroup {
        if c.mode != mode::EXEMPT {
            return Some(c);
        }
        return match by_uid {
            Some(u) if u.mode != mode::EXEMPT => Some(u),
            _ => None,
        };
    }
    if let Some(u) = by_uid {
        return (u.mode != mode::EXEMPT).then_some(u);
    }
    if uid == 0 || uid == cfg.agent_uid {
        return None;
    }
    Some(Policy {
        mode: cfg.default_mode,
        policy_id: cfg.default_policy_id,
    })
}

#[inline(always)]
fn governed(p: Policy, uid: u32) -> Option<(Policy, u32)> {
    if p.mode == mode::EXEMPT {
        None
    } else {
        Some((p, uid))
    }
}

#[inline(always)]
const fn mapped4(ip_be: u32) -> [u32; 4] {
    [0, 0, 0xffff_u32.to_be(), ip_be]
}

/// 127.0.0.0/8 or 0.0.0.0 (a connect to the unspecified address reaches the local host).
#[inline(always)]
const fn is_loopback4(ip_host: u32) -> bool {
    (ip_host >> 24) == 127 || ip_host == 0
}

#[inline(always)]
fn cookie_of(ctx: *mut c_void) -> u64 {
    // SAFETY: `ctx` is the program's context pointer, as the helper requires.
    unsafe { bpf_get_socket_cookie(ctx) }
}

/// Records the original destination and identity under the socket cookie. Returns false if the
/// entry could not be written; the caller then denies (the agent could not tell where the
/// connection was going, so it must not be redirected).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn record(
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
fn route(ty: u32, port: u16) -> Result<(ListenerKind, Counter), Counter> {
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
fn ep4(cfg: &ListenerConfig, k: ListenerKind) -> Endpoint4 {
    match k {
        ListenerKind::Http => cfg.http4,
        ListenerKind::Https => cfg.https4,
        ListenerKind::Dns => cfg.dns4,
        // Database destinations carry their target in IRON_DB_REDIRECTS.
        ListenerKind::Postgres => Endpoint4::default(),
    }
}

#[inline(always)]
fn ep6(cfg: &ListenerConfig, k: ListenerKind) -> Endpoint6 {
    match k {
        ListenerKind::Http => cfg.http6,
        ListenerKind::Https => cfg.https6,
        ListenerKind::Dns => cfg.dns6,
        ListenerKind::Postgres => Endpoint6::default(),
    }
}

#[inline(always)]
fn listener_from(v: u16) -> ListenerKind {
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
fn redirect_counter(kind: ListenerKind, ok: Counter, sendmsg: bool) -> Counter {
    match kind {
        ListenerKind::Dns if sendmsg => Counter::RedirectDnsSendmsg,
        _ => ok,
    }
}

// ---------------------------------------------------------------------------------------------
// sock_create
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn try_sock_create(sk: *mut bpf_sock) -> i32 {
    let Some(cfg) = config() else {
        return DENY;
    };
    if classify(cfg).is_none() {
        return ALLOW;
    }
    // SAFETY: ctx field reads at constant offsets.
    let (ty, proto) = unsafe { (rd(&raw const (*sk).type_), rd(&raw const (*sk).protocol)) };
    // The kernel has already resolved protocol 0 to the default (TCP/UDP) by the time this hook
    // runs, so an explicit allow-list of the two pairs covers every legitimate socket.
    if (ty == SOCK_STREAM && proto == IPPROTO_TCP) || (ty == SOCK_DGRAM && proto == IPPROTO_UDP) {
        ALLOW
    } else {
        deny(Counter::DenySockCreate)
    }
}

// ---------------------------------------------------------------------------------------------
// connect4 / sendmsg4
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn try_connect4(sa: *mut bpf_sock_addr, sendmsg: bool) -> i32 {
    let Some(cfg) = config() else {
        return DENY;
    };
    let Some((pol, uid)) = classify(cfg) else {
        return exempt_direct4(sa);
    };
    // SAFETY: ctx field reads at constant offsets.
    let (ip_be, port_raw, ty) = unsafe {
        (
            rd(&raw const (*sa).user_ip4),
            rd(&raw const (*sa).user_port),
            rd(&raw const (*sa).type_),
        )
    };
    let port = u16::from_be(port_raw as u16);
    let ip = u32::from_be(ip_be);

    // A configured database destination (loopback included) goes to the PostgreSQL proxy.
    if ty == SOCK_STREAM && pol.mode == mode::REDIRECT {
        if let Some(r) = db_redirect(mapped4(ip_be), port) {
            return redirect4(sa, r.ep4, &pol, uid, ip_be, port, ListenerKind::Postgres, false);
        }
    }
    if is_loopback4(ip) {
        if let Some(v) = direct4(sa, cfg, &pol, uid, ty, ip_be, port) {
            return v;
        }
        // DNS to a local resolver still goes to the agent (a local resolver would resolve and
        // forward anything: DNS exfiltration), unless it already is the agent's DNS listener.
        let to_agent_dns = ip_be == cfg.dns4.addr && port == cfg.dns4.port;
        // TCP too: a local resolver reached over TCP would leak names just the same.
        if port == PORT_DNS && pol.mode == mode::REDIRECT && !to_agent_dns {
            let ep = ep4(cfg, ListenerKind::Dns);
            return redirect4(sa, ep, &pol, uid, ip_be, port, ListenerKind::Dns, sendmsg);
        }
        if cfg.loopback == loopback::ALLOW {
            return ALLOW;
        }
        return deny(Counter::DenyLoopback);
    }
    if pol.mode != mode::REDIRECT {
        return deny(if ty == SOCK_STREAM {
            Counter::DenyTcp
        } else {
            Counter::DenyUdp
        });
    }
    match route(ty, port) {
        Ok((kind, _)) => redirect4(sa, ep4(cfg, kind), &pol, uid, ip_be, port, kind, sendmsg),
        Err(c) => deny(c),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn redirect4(
    sa: *mut bpf_sock_addr,
    ep: Endpoint4,
    pol: &Policy,
    uid: u32,
    ip_be: u32,
    port: u16,
    kind: ListenerKind,
    sendmsg: bool,
) -> i32 {
    if ep.port == 0 {
        return deny(Counter::DenyNoListener);
    }
    let a = mapped4(ip_be);
    // The socket may be AF_INET6: a dual-stack socket sending to `::ffff:a.b.c.d` reaches
    // udp_sendmsg and therefore this sendmsg4 hook, while its replies go through recvmsg6.
    // SAFETY: ctx field read at a constant offset.
    let sock_family = if rd(unsafe { &raw const (*sa).family }) == u32::from(AF_INET6) {
        AF_INET6
    } else {
        AF_INET
    };
    if !record(sa.cast(), a, a, port, AF_INET, sock_family, kind, pol, uid) {
        return deny(Counter::DenyRecordFailed);
    }
    // SAFETY: connect4/sendmsg4 may write user_ip4 and user_port (as a 4-byte store).
    unsafe {
        wr(&raw mut (*sa).user_ip4, ep.addr);
        wr(&raw mut (*sa).user_port, u32::from(ep.port.to_be()));
    }
    count(redirect_counter(kind, counter_for(kind), sendmsg));
    ALLOW
}

#[inline(always)]
fn counter_for(kind: ListenerKind) -> Counter {
    match kind {
        ListenerKind::Http => Counter::RedirectHttp,
        ListenerKind::Https => Counter::RedirectHttps,
        ListenerKind::Dns => Counter::RedirectDnsConnect,
        ListenerKind::Postgres => Counter::RedirectPostgres,
    }
}

/// The proxy listener for a configured database destination (canonical address, port).
#[inline(always)]
fn db_redirect(addr: [u32; 4], port: u16) -> Option<DbRedirect> {
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
fn endpoints(cfg: &ListenerConfig, lk: ListenerKind, orig: &OrigDst) -> (Endpoint4, Endpoint6) {
    if matches!(lk, ListenerKind::Postgres) {
        db_redirect(orig.addr, orig.port).map_or((Endpoint4::default(), Endpoint6::default()), |r| {
            (r.ep4, r.ep6)
        })
    } else {
        (ep4(cfg, lk), ep6(cfg, lk))
    }
}

// ---------------------------------------------------------------------------------------------
// connect6 / sendmsg6
// ---------------------------------------------------------------------------------------------

/// How an IPv6 destination relates to IPv4.
#[derive(Clone, Copy)]
enum V6Kind {
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
fn v6_kind(w: [u32; 4]) -> V6Kind {
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

#[inline(always)]
fn try_connect6(sa: *mut bpf_sock_addr, sendmsg: bool) -> i32 {
    let Some(cfg) = config() else {
        return DENY;
    };
    let Some((pol, uid)) = classify(cfg) else {
        return exempt_direct6(sa);
    };
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
    let kind = v6_kind(w);

    if ty == SOCK_STREAM && pol.mode == mode::REDIRECT {
        let canon = match kind {
            V6Kind::Mapped(v4) | V6Kind::Carried(v4) => mapped4(v4.to_be()),
            V6Kind::Native => w,
        };
        if let Some(r) = db_redirect(canon, port) {
            let (e4, e6) = (r.ep4, r.ep6);
            return redirect6(sa, (e4, e6), &pol, uid, w, kind, port, ListenerKind::Postgres, false);
        }
    }

    // Only addresses that really stay on this host count as loopback. A loopback IPv4 carried in
    // NAT64/6to4/compat form would leave the host as IPv6, so it is denied, never allowed.
    let is_zero = w[0] == 0 && w[1] == 0 && w[2] == 0;
    let local = match kind {
        V6Kind::Mapped(v4) => is_loopback4(v4),
        V6Kind::Native => false,
        // `::` and `::1` are excluded from Carried by v6_kind; they are native loopback.
        V6Kind::Carried(_) => false,
    } || (is_zero && (u32::from_be(w[3]) <= 1));
    let carried_loopback = matches!(kind, V6Kind::Carried(v4) if is_loopback4(v4));

    if local {
        if let Some(v) = direct6(sa, cfg, &pol, uid, ty, w, kind, port) {
            return v;
        }
        let to_agent_dns = match kind {
            V6Kind::Mapped(_) => w[3] == cfg.dns4.addr && port == cfg.dns4.port,
            _ => w == cfg.dns6.addr && port == cfg.dns6.port,
        };
        if port == PORT_DNS && pol.mode == mode::REDIRECT && !to_agent_dns {
            return redirect6(
                sa,
                (ep4(cfg, ListenerKind::Dns), ep6(cfg, ListenerKind::Dns)),
                &pol,
                uid,
                w,
                kind,
                port,
                ListenerKind::Dns,
                sendmsg,
            );
        }
        if cfg.loopback == loopback::ALLOW {
            return ALLOW;
        }
        return deny(Counter::DenyLoopback);
    }
    if carried_loopback {
        return deny(Counter::DenyLoopback);
    }
    if pol.mode != mode::REDIRECT {
        return deny(if ty == SOCK_STREAM {
            Counter::DenyTcp
        } else {
            Counter::DenyUdp
        });
    }
    match route(ty, port) {
        Ok((lk, _)) => {
            let eps = (ep4(cfg, lk), ep6(cfg, lk));
            redirect6(sa, eps, &pol, uid, w, kind, port, lk, sendmsg)
        }
        Err(c) => deny(c),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn redirect6(
    sa: *mut bpf_sock_addr,
    eps: (Endpoint4, Endpoint6),
    pol: &Policy,
    uid: u32,
    w: [u32; 4],
    kind: V6Kind,
    port: u16,
    lk: ListenerKind,
    sendmsg: bool,
) -> i32 {
    // A v4-mapped destination means the socket talks IPv4: redirect to the IPv4 listener in mapped
    // form. Everything else stays IPv6 on the wire and goes to the IPv6 listener.
    let (target, tport, canon, family) = match kind {
        V6Kind::Mapped(v4) => {
            let ep = eps.0;
            (mapped4(ep.addr), ep.port, mapped4(v4.to_be()), AF_INET)
        }
        V6Kind::Carried(v4) => {
            let ep = eps.1;
            (ep.addr, ep.port, mapped4(v4.to_be()), AF_INET)
        }
        V6Kind::Native => {
            let ep = eps.1;
            (ep.addr, ep.port, w, AF_INET6)
        }
    };
    if tport == 0 {
        return deny(Counter::DenyNoListener);
    }
    if !record(sa.cast(), canon, w, port, family, AF_INET6, lk, pol, uid) {
        return deny(Counter::DenyRecordFailed);
    }
    // SAFETY: connect6/sendmsg6 may write user_ip6 (4-byte words) and user_port (4-byte store).
    unsafe {
        wr(&raw mut (*sa).user_ip6[0], target[0]);
        wr(&raw mut (*sa).user_ip6[1], target[1]);
        wr(&raw mut (*sa).user_ip6[2], target[2]);
        wr(&raw mut (*sa).user_ip6[3], target[3]);
        wr(&raw mut (*sa).user_port, u32::from(tport.to_be()));
    }
    count(redirect_counter(lk, counter_for(lk), sendmsg));
    ALLOW
}

// ---------------------------------------------------------------------------------------------
// recvmsg / getpeername: show the original peer
// ---------------------------------------------------------------------------------------------

/// Rewrites the address seen by the workload back to the original destination, but only if the
/// socket was redirected (cookie entry of the right family) and the address currently shown is the
/// listener it was redirected to. `dns_only` restricts recvmsg to DNS replies.
#[inline(always)]
fn try_restore4(sa: *mut bpf_sock_addr, dns_only: bool) {
    let Some(cfg) = config() else {
        return;
    };
    let cookie = cookie_of(sa.cast());
    // SAFETY: the value is copied out immediately; `OrigDst` is plain data.
    let Some(orig) = (unsafe { IRON_ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return;
    };
    if orig.sock_family != AF_INET {
        return;
    }
    let lk = listener_from(orig.listener);
    if dns_only && !matches!(lk, ListenerKind::Dns) {
        return;
    }
    let ep = endpoints(cfg, lk, &orig).0;
    // SAFETY: ctx field reads at constant offsets.
    let (ip_be, port_raw) = unsafe {
        (
            rd(&raw const (*sa).user_ip4),
            rd(&raw const (*sa).user_port),
        )
    };
    if ip_be != ep.addr || u16::from_be(port_raw as u16) != ep.port {
        return;
    }
    // SAFETY: recvmsg4/getpeername4 may write user_ip4 and user_port.
    unsafe {
        wr(&raw mut (*sa).user_ip4, orig.wire_addr[3]);
        wr(&raw mut (*sa).user_port, u32::from(orig.port.to_be()));
    }
    count(if dns_only {
        Counter::DnsReplyRestored
    } else {
        Counter::PeerRestored
    });
}

#[inline(always)]
fn try_restore6(sa: *mut bpf_sock_addr, dns_only: bool) {
    let Some(cfg) = config() else {
        return;
    };
    let cookie = cookie_of(sa.cast());
    // SAFETY: as in try_restore4.
    let Some(orig) = (unsafe { IRON_ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return;
    };
    if orig.sock_family != AF_INET6 {
        return;
    }
    let lk = listener_from(orig.listener);
    if dns_only && !matches!(lk, ListenerKind::Dns) {
        return;
    }
    // SAFETY: ctx field reads at constant offsets.
    let (w, port_raw) = unsafe {
        (
            [
                rd(&raw const (*sa).user_ip6[0]),
                rd(&raw const (*sa).user_ip6[1]),
                rd(&raw const (*sa).user_ip6[2]),
                rd(&raw const (*sa).user_ip6[3]),
            ],
            rd(&raw const (*sa).user_port),
        )
    };
    let port = u16::from_be(port_raw as u16);
    let (e4, e6) = endpoints(cfg, lk, &orig);
    let is_listener =
        (w == mapped4(e4.addr) && port == e4.port) || (w == e6.addr && port == e6.port);
    if !is_listener {
        return;
    }
    let o = orig.wire_addr;
    // SAFETY: recvmsg6/getpeername6 may write user_ip6 and user_port.
    unsafe {
        wr(&raw mut (*sa).user_ip6[0], o[0]);
        wr(&raw mut (*sa).user_ip6[1], o[1]);
        wr(&raw mut (*sa).user_ip6[2], o[2]);
        wr(&raw mut (*sa).user_ip6[3], o[3]);
        wr(&raw mut (*sa).user_port, u32::from(orig.port.to_be()));
    }
    count(if dns_only {
        Counter::DnsReplyRestored
    } else {
        Counter::PeerRestored
    });
}

// ---------------------------------------------------------------------------------------------
// sock_ops: cookie entry -> 4-tuple entry for the agent
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn try_sock_ops(ctx: &SockOpsContext) {
    let ops = ctx.ops;
    // SAFETY: ctx field read at a constant offset.
    let op = rd(unsafe { &raw const (*ops).op });
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return;
    }
    let cookie = cookie_of(ops.cast());
    // SAFETY: as in try_restore4.
    let Some(orig) = (unsafe { IRON_ORIG_BY_COOKIE.get(&cookie) }).copied() else {
        return;
    };
    // Load every field unconditionally before selecting on the family (recipe pitfall 1).
    // SAFETY: ctx field reads at constant offsets.
    let (family, l4, r4, l6, r6, lport, rport) = unsafe {
        (
            rd(&raw const (*ops).family),
            rd(&raw const (*ops).local_ip4),
            rd(&raw const (*ops).remote_ip4),
            [
                rd(&raw const (*ops).local_ip6[0]),
                rd(&raw const (*ops).local_ip6[1]),
                rd(&raw const (*ops).local_ip6[2]),
                rd(&raw const (*ops).local_ip6[3]),
            ],
            [
                rd(&raw const (*ops).remote_ip6[0]),
                rd(&raw const (*ops).remote_ip6[1]),
                rd(&raw const (*ops).remote_ip6[2]),
                rd(&raw const (*ops).remote_ip6[3]),
            ],
            rd(&raw const (*ops).local_port),
            rd(&raw const (*ops).remote_port),
        )
    };
    let (src_addr, dst_addr) = if family == u32::from(AF_INET) {
        (mapped4(l4), mapped4(r4))
    } else {
        (l6, r6)
    };
    let key = SockKey {
        src_addr,
        dst_addr,
        // local_port is host order; remote_port holds the network-order port in its upper half.
        src_port: lport as u16,
        dst_port: u16::from_be((rport >> 16) as u16),
    };
    if IRON_ORIG_BY_TUPLE.insert(&key, &orig, 0).is_ok() {
        count(Counter::TupleRecorded);
    }
}

// ---------------------------------------------------------------------------------------------
// Direct connections to the agent's own listeners (HTTP, HTTPS, tunnel, DNS)
// ---------------------------------------------------------------------------------------------
//
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
fn agent_port(port: u16, proto: u32) -> bool {
    agent_port_bits(port) & proto != 0
}

/// What a governed task's loopback connect to `port` means here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// Refused now (a `deny` task asking for DNS).
    Deny,
    /// A TCP connection to the agent: record who opens it, then allow.
    Record,
    /// Not the agent's concern: the ordinary loopback rules apply.
    Pass,
}

#[inline(always)]
fn direct_kind(cfg: &ListenerConfig, pol: &Policy, ty: u32, port: u16) -> Direct {
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
fn record_direct(
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
fn sock_family_of(sa: *mut bpf_sock_addr) -> u16 {
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
fn direct4(
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
fn direct6(
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
const EXEMPT_POLICY: Policy = Policy {
    mode: mode::EXEMPT,
    policy_id: 0,
};

/// Exempt task, IPv4: always allowed; a TCP connect to the agent's port on loopback is recorded
/// (best effort) so the agent knows the peer is exempt rather than unidentifiable.
#[inline(always)]
fn exempt_direct4(sa: *mut bpf_sock_addr) -> i32 {
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
fn exempt_direct6(sa: *mut bpf_sock_addr) -> i32 {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
