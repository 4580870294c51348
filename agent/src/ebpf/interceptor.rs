//! Loading, attaching, pinning and adopting the interception programs.

use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use agent_common::{
    COUNTER_COUNT, COUNTERS, Counter, ListenerConfig, MAP_CONFIG, MAP_COUNTERS,
    MAP_GOVERNED_CGROUPS, MAP_NAMES, MAP_ORIG_BY_TUPLE, MAP_UID_POLICY, PIN_LINKS_SUBDIR,
    PIN_MAPS_SUBDIR, PROGRAMS, Policy,
};
use aya::{
    EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::links::PinnedLink,
};
use parking_lot::Mutex;

use crate::identify::{CgroupId, ClientAddr, ConnOrigin, LocalAddr, OrigDstLookup, PolicyId, Uid};

use super::agent_ports::{AgentPort, AgentPortTable, PortGroup};
use super::{InterceptConfig, InterceptError, Mode, lookup::OrigDstTable, pins, sys};

/// The eBPF object built by agent/build.rs; empty when the toolchain was missing at build time.
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// Whether this binary carries a real eBPF object (false when built without the eBPF toolchain).
pub fn object_built() -> bool {
    !OBJECT.is_empty()
}

/// Summed per-CPU counters of the programs, indexed by [`Counter`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    values: [u64; COUNTER_COUNT as usize],
}

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.values.get(c as usize).copied().unwrap_or(0)
    }

    /// `(counter, value)` for every counter.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        COUNTERS.iter().map(|&c| (c, self.get(c)))
    }
}

/// Handle on the installed interception: the programs are attached at the cgroup v2 root through
/// links pinned under `pin_dir`, so they stay attached (and keep failing closed: redirected
/// connections hit a closed port, everything else stays denied) when this handle is dropped or
/// the agent exits. A restarted agent calls [`Interceptor::adopt`]; uninstall is
/// [`Interceptor::detach_and_unpin`].
pub struct Interceptor {
    pin_dir: PathBuf,
    config: Mutex<Array<MapData, ListenerConfig>>,
    uid_policy: Mutex<HashMap<MapData, u32, Policy>>,
    cgroups: Mutex<HashMap<MapData, u64, Policy>>,
    counters: PerCpuArray<MapData, u64>,
    orig: OrigDstTable,
    agent_ports: AgentPortTable,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Loads the programs, writes `cfg`, attaches them at the cgroup root and pins maps and links
    /// under `cfg.pin_dir` (mounting bpffs if needed).
    ///
    /// If an installation is already pinned there it is replaced without a fail-open window: the
    /// new programs are attached and pinned in a staging directory first, then the old pins are
    /// removed (detaching the old programs) and the staging directory is renamed into place. The
    /// new maps start empty: re-apply uid policies and governed cgroups afterwards.
    pub fn install(cfg: &InterceptConfig) -> Result<Self, InterceptError> {
        if !object_built() {
            return Err(InterceptError::ObjectNotBuilt);
        }
        let raw = cfg.to_raw()?;
        sys::ensure_bpffs(&cfg.pin_dir)?;
        let cg_root = match &cfg.cgroup_root {
            Some(p) => p.clone(),
            None => sys::cgroup2_mount()?,
        };
        let cg = File::open(&cg_root)
            .map_err(|e| InterceptError::io(format!("opening cgroup {}", cg_root.display()), e))?;

        // aya-log level, frozen into the programs' read-only data: 0 (the default) lets the
        // verifier drop every logging branch.
        let log_level = super::log::level_from_env();
        let mut ebpf = EbpfLoader::new()
            .override_global(super::log::LEVEL_GLOBAL, &log_level, true)
            .load(OBJECT)
            .map_err(|e| InterceptError::Object(Box::new(e)))?;
        // Config before attach: programs must never run with the zeroed (deny-everything) config
        // longer than necessary.
        {
            let map = ebpf.map_mut(MAP_CONFIG).ok_or(InterceptError::Missing {
                what: "map",
                name: MAP_CONFIG,
            })?;
            let mut arr: Array<&mut MapData, ListenerConfig> =
                Array::try_from(map).map_err(|e| InterceptError::map(MAP_CONFIG, e))?;
            arr.set(0, raw, 0)
                .map_err(|e| InterceptError::map(MAP_CONFIG, e))?;
        }

        let staging = staging_dir(&cfg.pin_dir);
        remove_pins(&staging)?;
        let guard = StagingGuard(Some(staging.clone()));
        pin_and_attach(&mut ebpf, &cg, &staging)?;
        super::harden::pin_and_attach(&mut ebpf, &cg, &staging, &cfg.harden)?;
        if log_level > 0
            && let Err(e) = super::log::spawn_reader(&mut ebpf)
        {
            tracing::warn!(error = %e, "eBPF logging requested but its reader did not start");
        }
        // Everything new is attached and pinned. Drop the loader's own fds; the pins keep the
        // programs and maps alive.
        drop(ebpf);

        // Swap: removing the old pins detaches the old programs (the new ones are already in
        // force), then the staging directory takes the canonical name.
        remove_pins(&cfg.pin_dir)?;
        fs::rename(&staging, &cfg.pin_dir).map_err(|e| {
            InterceptError::io(
                format!(
                    "renaming {} to {}",
                    staging.display(),
                    cfg.pin_dir.display()
                ),
                e,
            )
        })?;
        guard.disarm();
        remove_stale_staging(&cfg.pin_dir);
        Self::open(&cfg.pin_dir)
    }

    /// Takes over an installation pinned by an earlier agent process (after a restart) and writes
    /// the (possibly changed) listener config. Fails with [`InterceptError::NotInstalled`] if any
    /// pinned link or map is missing.
    pub fn adopt(cfg: &InterceptConfig) -> Result<Self, InterceptError> {
        let raw = cfg.to_raw()?;
        let links_dir = cfg.pin_dir.join(PIN_LINKS_SUBDIR);
        for (name, _) in PROGRAMS {
            let path = links_dir.join(name);
            if !path.exists() {
                return Err(InterceptError::NotInstalled { path });
            }
            // Opening proves the pin is a live link (not a stale file); dropping the handle
            // closes only our fd, the pin keeps the program attached.
            PinnedLink::from_pin(&path).map_err(|e| InterceptError::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
        }
        let me = Self::open(&cfg.pin_dir)?;
        me.set_config(&raw)?;
        super::harden::apply_pinned(&cfg.pin_dir, &cfg.harden)?;
        Ok(me)
    }

    /// [`Self::adopt`] if an installation is pinned, [`Self::install`] otherwise.
    pub fn install_or_adopt(cfg: &InterceptConfig) -> Result<Self, InterceptError> {
        // An installation from an older build lacks maps this one uses: replace it.
        let maps = cfg.pin_dir.join(PIN_MAPS_SUBDIR);
        if is_installed(&cfg.pin_dir)
            && MAP_NAMES.iter().all(|m| maps.join(m).exists())
            && super::harden::is_installed(&cfg.pin_dir, cfg.harden.lsm)
        {
            Self::adopt(cfg)
        } else {
            Self::install(cfg)
        }
    }

    /// Uninstalls: removes every pin, which detaches the programs and frees the maps.
    pub fn detach_and_unpin(self) -> Result<(), InterceptError> {
        let dir = self.pin_dir.clone();
        drop(self);
        remove_pins(&dir)
    }

    fn open(pin_dir: &Path) -> Result<Self, InterceptError> {
        let maps_dir = pin_dir.join(PIN_MAPS_SUBDIR);
        let open = |name: &'static str| -> Result<Map, InterceptError> {
            let path = maps_dir.join(name);
            if !path.exists() {
                return Err(InterceptError::NotInstalled { path });
            }
            let data = MapData::from_pin(&path).map_err(|e| InterceptError::map(name, e))?;
            Map::from_map_data(data).map_err(|e| InterceptError::map(name, e))
        };
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            config: Mutex::new(
                Array::try_from(open(MAP_CONFIG)?)
                    .map_err(|e| InterceptError::map(MAP_CONFIG, e))?,
            ),
            uid_policy: Mutex::new(
                HashMap::try_from(open(MAP_UID_POLICY)?)
                    .map_err(|e| InterceptError::map(MAP_UID_POLICY, e))?,
            ),
            cgroups: Mutex::new(
                HashMap::try_from(open(MAP_GOVERNED_CGROUPS)?)
                    .map_err(|e| InterceptError::map(MAP_GOVERNED_CGROUPS, e))?,
            ),
            counters: PerCpuArray::try_from(open(MAP_COUNTERS)?)
                .map_err(|e| InterceptError::map(MAP_COUNTERS, e))?,
            orig: OrigDstTable::from_map(open(MAP_ORIG_BY_TUPLE)?)?,
            agent_ports: AgentPortTable::open(pin_dir)?,
        })
    }

    /// Sets the agent's own listening ports owned by `group` (see [`AgentPortTable::set`]).
    pub fn set_agent_ports(
        &self,
        group: PortGroup,
        ports: &[AgentPort],
    ) -> Result<(), InterceptError> {
        self.agent_ports.set(group, ports)
    }

    /// Whether the LSM programs are attached (false when their attach fell back).
    pub fn lsm_attached(&self) -> bool {
        super::harden::lsm_attached(&self.pin_dir)
    }

    /// The bpffs directory holding this installation's pins.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Rewrites the listener config read by the programs (takes effect for the next operation).
    pub fn set_config(&self, raw: &ListenerConfig) -> Result<(), InterceptError> {
        self.config
            .lock()
            .set(0, *raw, 0)
            .map_err(|e| InterceptError::map(MAP_CONFIG, e))
    }

    /// Sets the mode and policy id of `uid`. Listing uid 0 or the agent's uid here overrides
    /// their default exemption.
    pub fn set_uid_policy(
        &self,
        uid: Uid,
        mode: Mode,
        policy_id: PolicyId,
    ) -> Result<(), InterceptError> {
        let p = Policy {
            mode: mode.raw(),
            policy_id: policy_id.0,
        };
        self.uid_policy
            .lock()
            .insert(uid.0, p, 0)
            .map_err(|e| InterceptError::map(MAP_UID_POLICY, e))
    }

    /// Removes `uid` from the policy map (it falls back to the default mode). Not-present is ok.
    pub fn remove_uid_policy(&self, uid: Uid) -> Result<(), InterceptError> {
        remove_ok_if_absent(self.uid_policy.lock().remove(&uid.0), MAP_UID_POLICY)
    }

    /// The mode and policy id set for `uid`, if any.
    pub fn uid_policy(&self, uid: Uid) -> Result<Option<(Mode, PolicyId)>, InterceptError> {
        get_policy(self.uid_policy.lock().get(&uid.0, 0), MAP_UID_POLICY)
    }

    /// Governs every task in the cgroup subtree rooted at `path` (cgroup v2 directory), whatever
    /// its uid (root and setuid programs included). Returns the cgroup id.
    pub fn govern_cgroup(
        &self,
        path: &Path,
        mode: Mode,
        policy_id: PolicyId,
    ) -> Result<CgroupId, InterceptError> {
        let id = CgroupId(sys::cgroup_id(path)?);
        let p = Policy {
            mode: mode.raw(),
            policy_id: policy_id.0,
        };
        self.cgroups
            .lock()
            .insert(id.0, p, 0)
            .map_err(|e| InterceptError::map(MAP_GOVERNED_CGROUPS, e))?;
        Ok(id)
    }

    /// Stops governing the subtree at `path` by cgroup membership. Not-present is ok.
    pub fn ungovern_cgroup(&self, path: &Path) -> Result<(), InterceptError> {
        let id = CgroupId(sys::cgroup_id(path)?);
        self.ungovern_cgroup_id(id)
    }

    /// As [`Self::ungovern_cgroup`], by id (for cgroups that were already removed).
    pub fn ungovern_cgroup_id(&self, id: CgroupId) -> Result<(), InterceptError> {
        remove_ok_if_absent(self.cgroups.lock().remove(&id.0), MAP_GOVERNED_CGROUPS)
    }

    /// Removes every uid and cgroup entry not in `uids` / `cgroups`: after a restart with an
    /// edited config, identities that were dropped must not stay governed by stale entries.
    /// Called after the new entries are written, so no identity is ever briefly ungoverned.
    pub fn retain_policies(
        &self,
        uids: &std::collections::HashSet<Uid>,
        cgroups: &std::collections::HashSet<CgroupId>,
    ) -> Result<(), InterceptError> {
        let mut map = self.uid_policy.lock();
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|u| !uids.contains(&Uid(*u)))
            .collect();
        for u in stale {
            remove_ok_if_absent(map.remove(&u), MAP_UID_POLICY)?;
        }
        drop(map);
        let mut map = self.cgroups.lock();
        let stale: Vec<u64> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|c| !cgroups.contains(&CgroupId(*c)))
            .collect();
        for c in stale {
            remove_ok_if_absent(map.remove(&c), MAP_GOVERNED_CGROUPS)?;
        }
        Ok(())
    }

    /// Current counter values, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, InterceptError> {
        sum_counters(&self.counters)
    }

    /// The original-destination table (also available through this type's [`OrigDstLookup`]).
    pub fn orig_dst_table(&self) -> &OrigDstTable {
        &self.orig
    }
}

impl OrigDstLookup for Interceptor {
    fn lookup(&self, client: ClientAddr, local: LocalAddr) -> Option<ConnOrigin> {
        self.orig.lookup(client, local)
    }
}

/// Pins every map and attaches and pins every program under `staging` (0700 directories: a
/// governed task that could open the maps could exempt itself or forge origins, threat T16).
fn pin_and_attach(ebpf: &mut aya::Ebpf, cg: &File, staging: &Path) -> Result<(), InterceptError> {
    let (maps_dir, links_dir) = (
        staging.join(PIN_MAPS_SUBDIR),
        staging.join(PIN_LINKS_SUBDIR),
    );
    for d in [&maps_dir, &links_dir] {
        fs::create_dir_all(d)
            .map_err(|e| InterceptError::io(format!("creating {}", d.display()), e))?;
    }
    // Only the agent may reach the pins: a governed task that could open the maps could
    // exempt itself or forge origins (threat T16). Pin files themselves are created 0600.
    for d in [staging, &maps_dir, &links_dir] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))
            .map_err(|e| InterceptError::io(format!("chmod 0700 {}", d.display()), e))?;
    }
    pins::pin_maps(ebpf, &MAP_NAMES, &maps_dir)?;
    for (name, kind) in PROGRAMS {
        let link = pins::attach_cgroup(name, pins::program(ebpf, name)?, kind.into(), cg)?;
        pins::pin_link(link, &links_dir, name)?;
    }
    Ok(())
}

/// Whether a complete set of link pins exists under `pin_dir`.
pub fn is_installed(pin_dir: &Path) -> bool {
    let links = pin_dir.join(PIN_LINKS_SUBDIR);
    PROGRAMS.iter().all(|(name, _)| links.join(name).exists())
}

/// Counters of the installation pinned under `pin_dir`, read without adopting it (adopting
/// rewrites the listener config, which a read-only `status` must not do).
pub fn pinned_counters(pin_dir: &Path) -> Result<Counters, InterceptError> {
    let path = pin_dir.join(PIN_MAPS_SUBDIR).join(MAP_COUNTERS);
    if !path.exists() {
        return Err(InterceptError::NotInstalled { path });
    }
    let data = MapData::from_pin(&path).map_err(|e| InterceptError::map(MAP_COUNTERS, e))?;
    let map = Map::from_map_data(data).map_err(|e| InterceptError::map(MAP_COUNTERS, e))?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(map).map_err(|e| InterceptError::map(MAP_COUNTERS, e))?;
    sum_counters(&counters)
}

fn sum_counters(counters: &PerCpuArray<MapData, u64>) -> Result<Counters, InterceptError> {
    let mut out = Counters::default();
    for (i, slot) in out.values.iter_mut().enumerate() {
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        let per_cpu = counters
            .get(&idx, 0)
            .map_err(|e| InterceptError::map(MAP_COUNTERS, e))?;
        *slot = per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v));
    }
    Ok(out)
}

fn staging_dir(pin_dir: &Path) -> PathBuf {
    let mut s = pin_dir.as_os_str().to_owned();
    // No dot: bpffs rejects names containing one (EPERM, "reserved for future use").
    s.push(format!("-staging-{}", std::process::id()));
    PathBuf::from(s)
}

/// Removes a pin directory tree. Removing a link pin detaches its program once no process holds
/// an fd to the link.
fn remove_pins(dir: &Path) -> Result<(), InterceptError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InterceptError::io(
            format!("removing pins in {}", dir.display()),
            e,
        )),
    }
}

/// Staging directories of installs that died half-way. Only called after a successful install, so
/// their programs are redundant by then.
fn remove_stale_staging(pin_dir: &Path) {
    let (Some(parent), Some(name)) = (pin_dir.parent(), pin_dir.file_name()) else {
        return;
    };
    let prefix = format!("{}-staging-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the staging pins when an install fails half-way (the old installation, if any, is
/// untouched and stays in force).
struct StagingGuard(Option<PathBuf>);

impl StagingGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn remove_ok_if_absent(
    r: Result<(), aya::maps::MapError>,
    map: &'static str,
) -> Result<(), InterceptError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(s))
            if s.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(InterceptError::map(map, e)),
    }
}

fn get_policy(
    r: Result<Policy, aya::maps::MapError>,
    map: &'static str,
) -> Result<Option<(Mode, PolicyId)>, InterceptError> {
    match r {
        Ok(p) => Ok(Mode::from_raw(p.mode).map(|m| (m, PolicyId(p.policy_id)))),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(InterceptError::map(map, e)),
    }
}
