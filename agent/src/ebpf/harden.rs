//! The hardening programs (issue 11): inbound binds and listens, IP options and IPv6 routing
//! headers, socket families, unix socket destinations, and self-protection. They share the eBPF
//! object, the pin directory and the governed-identity maps with interception; this module loads,
//! attaches and configures them. The LSM ones are attached only when the BPF LSM is active.

use std::{
    fs::{self, File},
    os::fd::AsFd,
    path::Path,
};

use agent_common::{
    PIN_LINKS_SUBDIR, PIN_MAPS_SUBDIR,
    harden::{
        AGENT_PORTS, HARDEN_COUNTERS, HARDEN_MAP_NAMES, HARDEN_PROGRAMS, HardenConfig,
        HardenCounter, HardenKind, InodeKey, KernelOffsets, MAP_BIND_PORTS, MAP_HARDEN_CONFIG,
        MAP_HARDEN_COUNTERS, MAP_PROTECTED, MAP_UNIX_ALLOW, UNIX_PATH_LEN, UnixPath, flags,
    },
};
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{CgroupSockopt, Lsm, links::FdLink},
};

use super::{
    InterceptError,
    btf::{KernelBtf, LsmOffsets},
    pins::{self, CgroupHook},
    protect::{self, ProtectedPath},
    raw_link,
};

/// Where the kernel lists the active LSMs (securityfs).
const LSM_LIST: &str = "/sys/kernel/security/lsm";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Unix sockets governed tasks may reach when `intercept.unix_allow` is not set: syslog and the
/// journal. Container runtime sockets are deliberately absent, and so is every local resolver
/// (nscd, systemd-resolved's varlink socket, the D-Bus system bus through which resolved also
/// answers): through them a workload could resolve names no policy allows (issue 11 item 5).
pub const DEFAULT_UNIX_ALLOW: [&str; 3] = [
    "/dev/log",
    "/run/systemd/journal/socket",
    "/run/systemd/journal/dev-log",
];

/// Unix sockets that resolve names for their clients, with what answers there: listing one in
/// `intercept.unix_allow` reopens the DNS leak, so `check-config` warns about it.
pub const RESOLVER_SOCKETS: [(&str, &str); 6] = [
    ("/run/nscd/socket", "nscd"),
    ("/var/run/nscd/socket", "nscd"),
    (
        "/run/systemd/resolve/io.systemd.Resolve",
        "systemd-resolved",
    ),
    (
        "/run/systemd/resolve/io.systemd.Resolve.Monitor",
        "systemd-resolved",
    ),
    ("/run/dbus/system_bus_socket", "systemd-resolved over D-Bus"),
    (
        "/var/run/dbus/system_bus_socket",
        "systemd-resolved over D-Bus",
    ),
];

/// Warnings for `unix_allow` entries through which governed tasks can resolve any name.
pub fn resolver_warnings(unix_allow: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in unix_allow.into_iter().flatten().enumerate() {
        if let Some((_, what)) = RESOLVER_SOCKETS.iter().find(|(p, _)| p == a) {
            out.push(format!(
                "intercept.unix_allow[{i}]: {a} lets governed tasks resolve names through \
                 {what}, including names no policy allows (a DNS channel around the agent)"
            ));
        }
    }
    out
}

/// Whether the BPF LSM can be used on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LsmState {
    Active,
    /// Why not (shown in the startup log and `iron-agent status`).
    Inactive(String),
}

impl LsmState {
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active)
    }

    /// Whether the agent can use the BPF LSM: mounts securityfs if needed, then [`Self::probe`].
    pub fn detect() -> Self {
        if let Some(why) = test_lsm_off() {
            return Self::Inactive(why);
        }
        if !Path::new(LSM_LIST).exists() {
            // Best effort: most hosts mount it; a container may not.
            let _ = crate::sys::mount_securityfs();
        }
        Self::probe()
    }

    /// [`Self::read`], then a trial load of a trivial LSM program: the list can name `bpf` while
    /// a policy (a sandbox's own BPF LSM, for instance) still refuses LSM programs.
    pub fn probe() -> Self {
        let listed = Self::read();
        if !listed.is_active() {
            return listed;
        }
        let id = KernelBtf::load(Path::new(KERNEL_BTF)).and_then(|b| {
            b.func_id("bpf_lsm_socket_create")
                .ok_or_else(|| "kernel BTF has no bpf_lsm_socket_create".to_string())
        });
        match id.and_then(|id| raw_link::probe_lsm_load(id).map_err(|e| e.to_string())) {
            Ok(()) => Self::Active,
            Err(e) => Self::Inactive(format!(
                "bpf is an active LSM but this process may not load LSM programs: {e}"
            )),
        }
    }

    /// Reads the active LSM list (nothing mounted, nothing loaded).
    pub fn read() -> Self {
        match fs::read_to_string(LSM_LIST) {
            Ok(list) if list.trim().split(',').any(|l| l == "bpf") => Self::Active,
            Ok(list) => Self::Inactive(format!(
                "bpf is not in the active LSM list ({}); add lsm=...,bpf to the kernel command line",
                list.trim()
            )),
            Err(e) => Self::Inactive(format!("cannot read {LSM_LIST}: {e}")),
        }
    }
}

/// Debug builds only: `IRON_AGENT_TEST_LSM_OFF` makes the BPF LSM look unusable, so the tests
/// can run the "protections off" paths (startup log, `status`, `require_lsm`) on a host where it
/// works. A release build never reads it.
#[cfg(debug_assertions)]
fn test_lsm_off() -> Option<String> {
    std::env::var_os("IRON_AGENT_TEST_LSM_OFF")
        .map(|_| "IRON_AGENT_TEST_LSM_OFF is set (debug build)".to_string())
}

#[cfg(not(debug_assertions))]
fn test_lsm_off() -> Option<String> {
    None
}

/// The protections that need the BPF LSM, for "which are off" messages.
pub const LSM_PROTECTIONS: &str = "socket families (AF_VSOCK, AF_PACKET, ...), listen() on \
    non-loopback addresses, unix socket allowlist, self-protection (ptrace, /proc/<agent>/mem, \
    bpf(), opening the CA key and state directory)";

/// Hardening settings from `intercept:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardenOptions {
    /// Attach the LSM programs (false when the BPF LSM is inactive).
    pub lsm: bool,
    /// Fail instead of continuing without the LSM programs when they cannot be attached.
    pub require_lsm: bool,
    /// Ports governed tasks may bind on non-loopback addresses.
    pub inbound_ports: Vec<u16>,
    /// Unix socket addresses governed tasks may reach (`@name` = abstract); `None` = no check.
    pub unix_allow: Option<Vec<String>>,
    pub self_protect: bool,
    /// The agent's listener ports (redirect targets), protected against squatting.
    pub agent_ports: Vec<u16>,
    /// What governed tasks may not open (with `self_protect` and the LSM).
    pub protect: Vec<ProtectedPath>,
}

impl Default for HardenOptions {
    fn default() -> Self {
        Self {
            lsm: false,
            require_lsm: false,
            inbound_ports: Vec::new(),
            unix_allow: Some(DEFAULT_UNIX_ALLOW.iter().map(|s| s.to_string()).collect()),
            self_protect: true,
            agent_ports: Vec::new(),
            protect: Vec::new(),
        }
    }
}

/// Turns a configured unix socket address into the key the programs compare.
pub fn unix_key(addr: &str) -> Result<UnixPath, String> {
    let bytes: Vec<u8> = match addr.strip_prefix('@') {
        Some(name) => std::iter::once(0).chain(name.bytes()).collect(),
        None if addr.starts_with('/') => addr.bytes().collect(),
        None => {
            return Err(format!(
                "{addr:?}: must be an absolute path or @abstract-name"
            ));
        }
    };
    if bytes.len() > UNIX_PATH_LEN || (addr.starts_with('/') && bytes.contains(&0)) {
        return Err(format!(
            "{addr:?}: longer than {UNIX_PATH_LEN} bytes or contains NUL"
        ));
    }
    let mut k = UnixPath::default();
    k.path[..bytes.len()].copy_from_slice(&bytes);
    Ok(k)
}

fn raw_config(o: &HardenOptions) -> Result<HardenConfig, InterceptError> {
    let mut f = flags::BIND_LOOPBACK_ONLY;
    if o.unix_allow.is_some() {
        f |= flags::UNIX_ALLOWLIST;
    }
    if o.self_protect {
        f |= flags::SELF_PROTECT;
    }
    // Legacy slots, read only by the bind programs of earlier builds (an adopted installation);
    // the current one checks the agent-port map, which holds every port.
    let mut ports = [0u16; AGENT_PORTS];
    for (slot, p) in ports
        .iter_mut()
        .zip(o.agent_ports.iter().filter(|p| **p != 0))
    {
        *slot = *p;
    }
    Ok(HardenConfig {
        flags: f,
        agent_tgid: std::process::id(),
        agent_ports: ports,
        offsets: kernel_offsets(
            o,
            KernelBtf::load(Path::new(KERNEL_BTF)).map(|b| b.kernel_offsets()),
        )?,
    })
}

/// The offsets the LSM checks read. A member the kernel lacks switches its check off (the
/// program skips a check whose offsets are 0) with a warning, or, with `require_lsm`, is a
/// startup error naming it: a check that cannot work is not silently dropped.
fn kernel_offsets(
    o: &HardenOptions,
    found: Result<LsmOffsets, String>,
) -> Result<KernelOffsets, InterceptError> {
    let found = match found {
        Ok(f) => f,
        Err(e) if o.require_lsm => {
            return Err(InterceptError::Config(format!(
                "intercept.require_lsm is true but the LSM checks cannot read kernel structs: {e}"
            )));
        }
        Err(e) => {
            if o.lsm {
                tracing::warn!(error = %e, "no kernel BTF: the listen, ptrace and file_open checks are off");
            }
            return Ok(KernelOffsets::default());
        }
    };
    if found.missing.is_empty() {
        return Ok(found.offsets);
    }
    let missing = found
        .missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if o.require_lsm {
        return Err(InterceptError::Config(format!(
            "intercept.require_lsm is true but {missing}: the LSM checks need it"
        )));
    }
    if o.lsm {
        tracing::warn!(
            missing = %missing,
            off = %found.off().join(", "),
            "kernel structs differ from what the LSM checks expect: these protections are off"
        );
    }
    Ok(found.offsets)
}

struct Maps {
    config: Array<MapData, HardenConfig>,
    ports: HashMap<MapData, u16, u8>,
    unix: HashMap<MapData, UnixPath, u8>,
    protected: HashMap<MapData, InodeKey, u8>,
}

impl Maps {
    fn write(&mut self, o: &HardenOptions) -> Result<(), InterceptError> {
        // Allowlists first, then the flags that turn their checks on.
        let want: std::collections::HashSet<u16> = o.inbound_ports.iter().copied().collect();
        let stale: Vec<u16> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|p| !want.contains(p))
            .collect();
        for p in &want {
            self.ports
                .insert(p, 1, 0)
                .map_err(|e| InterceptError::map(MAP_BIND_PORTS, e))?;
        }
        for p in stale {
            let _ = self.ports.remove(&p);
        }
        let keys = o
            .unix_allow
            .iter()
            .flatten()
            .map(|a| {
                unix_key(a)
                    .map_err(|r| InterceptError::Config(format!("intercept.unix_allow: {r}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stale: Vec<UnixPath> = self
            .unix
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keys.contains(k))
            .collect();
        for k in &keys {
            self.unix
                .insert(k, 1, 0)
                .map_err(|e| InterceptError::map(MAP_UNIX_ALLOW, e))?;
        }
        for k in stale {
            let _ = self.unix.remove(&k);
        }
        self.write_protected(o)?;
        self.config
            .set(0, raw_config(o)?, 0)
            .map_err(|e| InterceptError::map(MAP_HARDEN_CONFIG, e))
    }
}

impl Maps {
    /// The protected inodes, written before the flag that turns the check on. Stale entries go
    /// first (the map may be full of them after a restart with other paths); entries kept
    /// across a rewrite are never removed, so they are never briefly open.
    fn write_protected(&mut self, o: &HardenOptions) -> Result<(), InterceptError> {
        let want = if o.self_protect && o.lsm {
            let r = protect::resolve_all(&o.protect);
            log_protected(o, &r);
            r.entries
        } else {
            std::collections::HashMap::new()
        };
        let stale: Vec<InodeKey> = self
            .protected
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains_key(k))
            .collect();
        for k in stale {
            let _ = self.protected.remove(&k);
        }
        for (k, v) in &want {
            self.protected
                .insert(k, v, 0)
                .map_err(|e| InterceptError::map(MAP_PROTECTED, e))?;
        }
        Ok(())
    }
}

/// Says what is protected from governed opens, and what could not be.
fn log_protected(o: &HardenOptions, r: &protect::Resolved) {
    let paths = o
        .protect
        .iter()
        .filter(|p| p.kind != protect::Protect::Public)
        .map(|p| format!("{} {}", p.what, p.path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        protected = %paths,
        inodes = r.entries.len(),
        "self-protection: governed tasks cannot open these"
    );
    for s in &r.skipped {
        tracing::warn!(path = %s, "self-protection: not protected");
    }
    if r.truncated > 0 {
        tracing::warn!(
            left_out = r.truncated,
            "self-protection: too many files below the protected directories; those left out \
             are covered only while they sit directly in a protected directory"
        );
    }
}

/// Pins the hardening maps and attaches and pins the programs `o` asks for (the cgroup ones at
/// `cg`, the LSM ones globally).
pub(super) fn pin_and_attach(
    ebpf: &mut Ebpf,
    cg: &File,
    staging: &Path,
    o: &HardenOptions,
) -> Result<(), InterceptError> {
    let (maps_dir, links_dir) = (
        staging.join(PIN_MAPS_SUBDIR),
        staging.join(PIN_LINKS_SUBDIR),
    );
    pins::pin_maps(ebpf, &HARDEN_MAP_NAMES, &maps_dir)?;
    // Config and allowlists before any program is attached.
    apply_pinned(staging, o)?;
    let btf = if o.lsm {
        Some(Btf::from_sys_fs().map_err(|e| InterceptError::Config(format!("kernel BTF: {e}")))?)
    } else {
        None
    };
    for (name, kind) in HARDEN_PROGRAMS {
        let prog = pins::program(ebpf, name)?;
        let link = match kind {
            HardenKind::Bind => pins::attach_cgroup(name, prog, CgroupHook::SockAddr, cg)?,
            HardenKind::SkbEgress => pins::attach_cgroup(name, prog, CgroupHook::SkbEgress, cg)?,
            HardenKind::Setsockopt => {
                // aya 0.14 cannot pin a cgroup sockopt link: raw_link attaches and pins it.
                let p: &mut CgroupSockopt = prog
                    .try_into()
                    .map_err(|e| InterceptError::program(name, e))?;
                p.load().map_err(|e| InterceptError::program(name, e))?;
                let fd = p
                    .fd()
                    .map_err(|e| InterceptError::program(name, e))?
                    .as_fd();
                let path = links_dir.join(name);
                raw_link::attach_and_pin(fd, cg.as_fd(), raw_link::BPF_CGROUP_SETSOCKOPT, &path)
                    .map_err(|e| InterceptError::io(format!("attaching and pinning {name}"), e))?;
                continue;
            }
            HardenKind::Lsm(hook) => {
                let Some(btf) = &btf else { continue };
                match attach_lsm(prog, name, hook, btf) {
                    Ok(l) => l,
                    Err(e) if !o.require_lsm => {
                        drop_lsm_links(&links_dir, &e);
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        pins::pin_link(link, &links_dir, name)?;
    }
    Ok(())
}

/// An LSM program failed to attach (and `require_lsm` is off): all or nothing, since a partial
/// set would be harder to reason about.
fn drop_lsm_links(links_dir: &Path, e: &InterceptError) {
    for (n, k) in HARDEN_PROGRAMS {
        if matches!(k, HardenKind::Lsm(_)) {
            let _ = fs::remove_file(links_dir.join(n));
        }
    }
    tracing::warn!(
        reason = %e,
        off = LSM_PROTECTIONS,
        "BPF LSM not available: these protections are off"
    );
}

fn attach_lsm(
    prog: &mut aya::programs::Program,
    name: &'static str,
    hook: &str,
    btf: &Btf,
) -> Result<FdLink, InterceptError> {
    let perr = |e| InterceptError::program(name, e);
    let p: &mut Lsm = prog.try_into().map_err(perr)?;
    p.load(hook, btf).map_err(perr)?;
    let id = p.attach().map_err(perr)?;
    Ok(p.take_link(id).map_err(perr)?.into())
}

/// The hardening programs `lsm` says should be attached.
pub fn expected_programs(lsm: bool) -> impl Iterator<Item = &'static str> {
    HARDEN_PROGRAMS
        .iter()
        .filter(move |(_, k)| lsm || !matches!(k, HardenKind::Lsm(_)))
        .map(|(n, _)| *n)
}

/// Whether the LSM programs are attached (pinned) under `pin_dir`: false after a fallback.
pub fn lsm_attached(pin_dir: &Path) -> bool {
    let links = pin_dir.join(PIN_LINKS_SUBDIR);
    HARDEN_PROGRAMS
        .iter()
        .filter(|(_, k)| matches!(k, HardenKind::Lsm(_)))
        .all(|(n, _)| links.join(n).exists())
}

/// Whether every hardening map and the programs `lsm` asks for are pinned under `pin_dir`.
pub fn is_installed(pin_dir: &Path, lsm: bool) -> bool {
    let (maps, links) = (
        pin_dir.join(PIN_MAPS_SUBDIR),
        pin_dir.join(PIN_LINKS_SUBDIR),
    );
    HARDEN_MAP_NAMES.iter().all(|m| maps.join(m).exists())
        && expected_programs(lsm).all(|p| links.join(p).exists())
        && same_layout(&maps)
}

/// Whether the pinned config and counter maps have this build's layout: an installation from
/// a build with fewer kernel offsets or counters is replaced, not adopted (writing this
/// build's config into it would fail).
fn same_layout(maps_dir: &Path) -> bool {
    let info = |name: &str| MapData::from_pin(maps_dir.join(name)).and_then(|m| m.info());
    let cfg = info(MAP_HARDEN_CONFIG)
        .is_ok_and(|i| i.value_size() as usize == std::mem::size_of::<HardenConfig>());
    let cnt =
        info(MAP_HARDEN_COUNTERS).is_ok_and(|i| i.max_entries() == HARDEN_COUNTERS.len() as u32);
    cfg && cnt
}

/// Rewrites the hardening config of a pinned installation (after adopting it: the agent's pid
/// and ports changed).
pub(super) fn apply_pinned(pin_dir: &Path, o: &HardenOptions) -> Result<(), InterceptError> {
    let dir = pin_dir.join(PIN_MAPS_SUBDIR);
    let open = |name: &'static str| -> Result<Map, InterceptError> {
        let data = MapData::from_pin(dir.join(name)).map_err(|e| InterceptError::map(name, e))?;
        Map::from_map_data(data).map_err(|e| InterceptError::map(name, e))
    };
    let mut maps = Maps {
        config: Array::try_from(open(MAP_HARDEN_CONFIG)?)
            .map_err(|e| InterceptError::map(MAP_HARDEN_CONFIG, e))?,
        ports: HashMap::try_from(open(MAP_BIND_PORTS)?)
            .map_err(|e| InterceptError::map(MAP_BIND_PORTS, e))?,
        unix: HashMap::try_from(open(MAP_UNIX_ALLOW)?)
            .map_err(|e| InterceptError::map(MAP_UNIX_ALLOW, e))?,
        protected: HashMap::try_from(open(MAP_PROTECTED)?)
            .map_err(|e| InterceptError::map(MAP_PROTECTED, e))?,
    };
    maps.write(o)
}

/// Summed hardening counters of the installation pinned under `pin_dir`.
pub fn pinned_counters(pin_dir: &Path) -> Result<Vec<(HardenCounter, u64)>, InterceptError> {
    let path = pin_dir.join(PIN_MAPS_SUBDIR).join(MAP_HARDEN_COUNTERS);
    let data = MapData::from_pin(&path).map_err(|e| InterceptError::map(MAP_HARDEN_COUNTERS, e))?;
    let map = Map::from_map_data(data).map_err(|e| InterceptError::map(MAP_HARDEN_COUNTERS, e))?;
    let arr: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(map).map_err(|e| InterceptError::map(MAP_HARDEN_COUNTERS, e))?;
    HARDEN_COUNTERS
        .iter()
        .map(|&c| {
            let v = arr
                .get(&(c as u32), 0)
                .map_err(|e| InterceptError::map(MAP_HARDEN_COUNTERS, e))?;
            Ok((c, v.iter().fold(0u64, |a, x| a.wrapping_add(*x))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::btf::MissingMember;
    use super::*;

    fn missing_skc_num() -> Result<LsmOffsets, String> {
        Ok(LsmOffsets {
            offsets: KernelOffsets {
                task_tgid: 40,
                ..KernelOffsets::default()
            },
            missing: vec![MissingMember("sock_common.skc_num".into())],
        })
    }

    #[test]
    fn missing_offsets_fail_startup_with_require_lsm_and_disable_checks_otherwise() {
        let strict = HardenOptions {
            lsm: true,
            require_lsm: true,
            ..HardenOptions::default()
        };
        let err = kernel_offsets(&strict, missing_skc_num())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sock_common.skc_num"), "{err}");
        assert!(err.contains("require_lsm"), "{err}");
        let err = kernel_offsets(&strict, Err("no BTF".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no BTF"), "{err}");
        let lax = HardenOptions {
            lsm: true,
            ..HardenOptions::default()
        };
        let o = kernel_offsets(&lax, missing_skc_num()).unwrap();
        assert_eq!((o.socket_sk, o.skc_num, o.task_tgid), (0, 0, 40));
        assert_eq!(
            kernel_offsets(&lax, Err("no BTF".into())).unwrap(),
            KernelOffsets::default()
        );
    }

    #[test]
    fn the_default_unix_allowlist_holds_no_resolver_and_listing_one_warns() {
        for (p, _) in RESOLVER_SOCKETS {
            assert!(!DEFAULT_UNIX_ALLOW.contains(&p), "{p}");
        }
        assert!(!DEFAULT_UNIX_ALLOW.iter().any(|p| p.contains("docker")));
        let list = vec!["/dev/log".to_string(), "/run/nscd/socket".to_string()];
        let w = resolver_warnings(Some(&list));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("intercept.unix_allow[1]: /run/nscd/socket"),
            "{w:?}"
        );
        assert!(resolver_warnings(None).is_empty());
    }

    #[test]
    fn unix_keys_for_paths_and_abstract_names() {
        let k = unix_key("/run/dbus/system_bus_socket").unwrap();
        assert_eq!(&k.path[..5], b"/run/");
        assert_eq!(k.path[27], 0);
        let a = unix_key("@foo").unwrap();
        assert_eq!(&a.path[..4], b"\0foo");
        assert!(unix_key("relative.sock").unwrap_err().contains("absolute"));
        assert!(unix_key(&format!("/{}", "x".repeat(200))).is_err());
    }
}
