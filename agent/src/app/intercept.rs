//! Turns the `intercept:` block into attached eBPF programs: redirect targets from the bound
//! listeners, and a kernel policy entry for every configured identity.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use crate::config::intercept::{Identities, IdentityMode, InterceptConfig as Yaml, LoopbackMode};
use crate::ebpf::harden::{DEFAULT_UNIX_ALLOW, HardenOptions, LSM_PROTECTIONS, LsmState};
use crate::ebpf::protect::{Protect, ProtectedPath, is_dedicated};
use crate::ebpf::{
    AgentPort, InterceptConfig, InterceptError, Interceptor, LoopbackPolicy, Mode, PortGroup,
};
use crate::identify::{PolicyId, Uid};

use super::identity;

/// Where the bound listeners are, for the redirect targets.
pub struct Bound {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub dns: Option<SocketAddr>,
    pub tunnel: Option<SocketAddr>,
    /// The management API listener: a squatter on its port would collect the operator's key.
    pub management: Option<SocketAddr>,
    /// The metrics / health listener.
    pub metrics: Option<SocketAddr>,
    /// The PostgreSQL proxy's configured listen address (it binds after interception is set
    /// up, then keeps its own entry current: [`PortGroup::Postgres`]).
    pub postgres: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("intercept: {0}")]
    Ebpf(#[from] InterceptError),
    #[error("intercept.{field}: unknown user {user:?}")]
    UnknownUser { field: String, user: String },
    #[error("intercept.{field}: {reason}")]
    Listener { field: String, reason: String },
    #[error("intercept.require_lsm is true but the BPF LSM is not available: {0}")]
    LsmRequired(String),
}

/// Loads (or adopts) the programs and writes every identity's policy; `protect` is what
/// governed tasks may not open ([`protected_paths`]).
pub fn setup(
    cfg: &Yaml,
    bound: &Bound,
    protect: Vec<ProtectedPath>,
) -> Result<Arc<Interceptor>, SetupError> {
    // `intercept.listeners` overrides where traffic is sent (e.g. a fronting socket); by default
    // it goes to the listeners this agent bound.
    let over =
        |o: &Option<crate::config::ListenAddr>, field: &str, dflt: Option<SocketAddr>| match o {
            Some(a) => a
                .socket_addr()
                .map(Some)
                .map_err(|reason| SetupError::Listener {
                    field: format!("listeners.{field}"),
                    reason,
                }),
            None => Ok(dflt),
        };
    let http = over(&cfg.listeners.http, "http", Some(bound.http))?;
    let https = over(&cfg.listeners.https, "https", Some(bound.https))?;
    let dns = over(&cfg.listeners.dns, "dns", bound.dns)?;
    let pair = |a: Option<SocketAddr>| a.map_or((None, None), targets);
    let (http_v4, http_v6) = pair(http);
    let (https_v4, https_v6) = pair(https);
    let (dns_v4, dns_v6) = pair(dns);
    let lsm = lsm_state(cfg)?;
    let ports = agent_ports(bound, [http, https], dns);
    let postgres: Vec<AgentPort> = bound
        .postgres
        .map(|a| AgentPort::Tcp(a.port()))
        .into_iter()
        .collect();
    // Every port the agent serves is closed to governed binds. The bind program reads the
    // port table written below; this list only feeds the fixed slots older programs read.
    let squat_guard = squat_guard(ports.iter().chain(&postgres));
    let harden = HardenOptions {
        protect,
        ..harden_options(cfg, &lsm, squat_guard)
    };
    let kcfg = InterceptConfig {
        http_v4,
        https_v4,
        dns_v4,
        http_v6,
        https_v6,
        dns_v6,
        default_mode: mode(cfg.default),
        loopback: match cfg.loopback {
            LoopbackMode::Allow => LoopbackPolicy::Allow,
            LoopbackMode::Deny => LoopbackPolicy::Deny,
        },
        pin_dir: cfg.pin_dir.clone(),
        harden,
        ..InterceptConfig::default()
    };
    let icpt = Interceptor::install_or_adopt(&kcfg)?;
    icpt.set_agent_ports(PortGroup::Listeners, &ports)?;
    icpt.set_agent_ports(PortGroup::Postgres, &postgres)?;
    apply_identities(&icpt, cfg)?;
    tracing::info!(
        pin_dir = %cfg.pin_dir.display(),
        default = ?cfg.default,
        policies = cfg.policies.len(),
        lsm = icpt.lsm_attached(),
        "eBPF interception attached"
    );
    Ok(Arc::new(icpt))
}

/// The BPF LSM's state; without it, startup fails when `require_lsm` says so, and otherwise
/// says which protections are off.
fn lsm_state(cfg: &Yaml) -> Result<LsmState, SetupError> {
    let lsm = LsmState::detect();
    match &lsm {
        LsmState::Active => {}
        LsmState::Inactive(why) if cfg.require_lsm => {
            return Err(SetupError::LsmRequired(why.clone()));
        }
        LsmState::Inactive(why) => tracing::warn!(
            reason = %why,
            off = LSM_PROTECTIONS,
            "BPF LSM not available: these protections are off"
        ),
    }
    Ok(lsm)
}

fn harden_options(cfg: &Yaml, lsm: &LsmState, squat_guard: Vec<u16>) -> HardenOptions {
    HardenOptions {
        lsm: lsm.is_active(),
        require_lsm: cfg.require_lsm,
        inbound_ports: cfg.inbound_ports.clone(),
        unix_allow: Some(
            cfg.unix_allow
                .clone()
                .unwrap_or_else(|| DEFAULT_UNIX_ALLOW.iter().map(|s| s.to_string()).collect()),
        ),
        self_protect: cfg.self_protect,
        agent_ports: squat_guard,
        protect: Vec::new(),
    }
}

/// What governed tasks may not open (issue 11 item 12): the CA key, the token file, the state
/// directory `state` when it exists, and the CA key's directory when it is dedicated to the
/// agent ([`is_dedicated`]); the CA certificate stays readable (clients must trust it).
/// `tls.ca_*` and the state directory cannot change without a restart (a reload refuses a
/// new CA), so this is computed once, at startup.
pub fn protected_paths(cfg: &crate::config::Config, state: &std::path::Path) -> Vec<ProtectedPath> {
    let entry = |path: &std::path::Path, kind, what| ProtectedPath {
        path: path.to_path_buf(),
        kind,
        what,
    };
    let mut out = Vec::new();
    if let Some(key) = &cfg.tls.ca_key {
        out.push(entry(key, Protect::File, "CA key"));
        if let Some(dir) = key.parent().filter(|d| is_dedicated(d)) {
            out.push(entry(dir, Protect::Dir, "CA directory"));
        }
    }
    if let Some(cert) = &cfg.tls.ca_cert {
        out.push(entry(cert, Protect::Public, "CA certificate"));
    }
    if let Some(token) = &cfg.control_plane.token_file {
        out.push(entry(token, Protect::File, "token file"));
    }
    if state.is_dir() {
        if is_dedicated(state) {
            out.push(entry(state, Protect::Dir, "state directory"));
        } else {
            tracing::warn!(
                dir = %state.display(),
                "self-protection: the state directory is not named iron-agent, so it may be \
                 shared; only the CA key and token file are protected"
            );
        }
    }
    out
}

/// Writes every configured identity's kernel policy entry (later entries win).
fn apply_identities(icpt: &Interceptor, cfg: &Yaml) -> Result<(), SetupError> {
    apply(
        icpt,
        "governed",
        &cfg.governed,
        Mode::Redirect,
        PolicyId::DEFAULT,
    )?;
    apply(icpt, "exempt", &cfg.exempt, Mode::Exempt, PolicyId::DEFAULT)?;
    apply(icpt, "deny", &cfg.deny, Mode::DenyAll, PolicyId::DEFAULT)?;
    for (i, p) in cfg.policies.iter().enumerate() {
        let id = PolicyId::of_index(i);
        apply(
            icpt,
            &format!("policies[{i}]"),
            &p.identities(),
            Mode::Redirect,
            id,
        )?;
    }
    Ok(())
}

/// The kernel entries one [`apply`] wrote (a reload removes every entry no longer written).
#[derive(Default)]
pub(super) struct Applied {
    pub uids: Vec<Uid>,
    pub cgroups: Vec<crate::identify::CgroupId>,
}

pub(super) fn apply(
    icpt: &Interceptor,
    field: &str,
    ids: &Identities,
    mode: Mode,
    policy: PolicyId,
) -> Result<Applied, SetupError> {
    let mut out = Applied::default();
    for uid in &ids.uids {
        icpt.set_uid_policy(Uid(*uid), mode, policy)?;
        out.uids.push(Uid(*uid));
    }
    for user in &ids.users {
        let uid = identity::uid_of(user).ok_or_else(|| SetupError::UnknownUser {
            field: format!("{field}.users"),
            user: user.clone(),
        })?;
        icpt.set_uid_policy(Uid(uid), mode, policy)?;
        out.uids.push(Uid(uid));
    }
    for cg in &ids.cgroups {
        out.cgroups.push(icpt.govern_cgroup(cg, mode, policy)?);
    }
    Ok(out)
}

/// The agent's own listening ports (bound and redirect targets, management and metrics): a
/// governed task's direct connection to one of them is recorded by the kernel with its
/// identity, and none of them may be bound by a governed task.
fn agent_ports(
    bound: &Bound,
    targets: [Option<SocketAddr>; 2],
    dns: Option<SocketAddr>,
) -> Vec<AgentPort> {
    let tcp = [
        Some(bound.http),
        Some(bound.https),
        bound.tunnel,
        bound.management,
        bound.metrics,
    ]
    .into_iter()
    .chain(targets)
    .flatten()
    .map(|a| AgentPort::Tcp(a.port()));
    let dns = [bound.dns, dns]
        .into_iter()
        .flatten()
        .map(|a| AgentPort::Dns(a.port()));
    tcp.chain(dns).collect()
}

/// The port numbers of `ports`, sorted, without duplicates or 0.
fn squat_guard<'a>(ports: impl Iterator<Item = &'a AgentPort>) -> Vec<u16> {
    let mut out: Vec<u16> = ports
        .map(|p| match p {
            AgentPort::Tcp(n) | AgentPort::Dns(n) => *n,
        })
        .filter(|p| *p != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn mode(m: IdentityMode) -> Mode {
    match m {
        IdentityMode::Redirect => Mode::Redirect,
        IdentityMode::Deny => Mode::DenyAll,
        IdentityMode::Exempt => Mode::Exempt,
    }
}

/// Redirect targets for a bound listener (see [`crate::ebpf::listener_targets`]).
pub fn targets(addr: SocketAddr) -> (Option<SocketAddrV4>, Option<SocketAddrV6>) {
    crate::ebpf::listener_targets(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protects_the_key_the_state_dir_and_only_a_dedicated_ca_dir() {
        let t = crate::ebpf::protect::Scratch::new("paths");
        let state = t.path().join("iron-agent");
        std::fs::create_dir(&state).unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.tls.ca_key = Some(t.path().join("shared/ca.key"));
        cfg.tls.ca_cert = Some(t.path().join("shared/ca.crt"));
        let got = |cfg: &crate::config::Config, state: &std::path::Path| {
            protected_paths(cfg, state)
                .into_iter()
                .map(|p| (p.what, p.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            got(&cfg, &state),
            [
                ("CA key", Protect::File),
                ("CA certificate", Protect::Public),
                ("state directory", Protect::Dir),
            ]
        );
        // The install layout: the CA's own directory is protected as a whole.
        cfg.tls.ca_key = Some("/etc/iron-agent/ca.key".into());
        cfg.control_plane.token_file = Some("/etc/iron-agent/token".into());
        let paths = protected_paths(&cfg, &t.path().join("absent/iron-agent"));
        let dir = paths.iter().find(|p| p.what == "CA directory").unwrap();
        assert_eq!(
            (dir.path.as_path(), dir.kind),
            (std::path::Path::new("/etc/iron-agent"), Protect::Dir)
        );
        assert!(paths.iter().any(|p| p.what == "token file"));
        assert!(!paths.iter().any(|p| p.what == "state directory"));
        // A state directory that may be shared is left alone.
        assert!(
            !got(&cfg, t.path())
                .iter()
                .any(|(w, _)| *w == "state directory")
        );
    }

    #[test]
    fn every_listener_is_an_agent_port() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let bound = Bound {
            http: a("127.0.0.1:8080"),
            https: a("127.0.0.1:8443"),
            dns: Some(a("127.0.0.1:5353")),
            tunnel: Some(a("127.0.0.1:1080")),
            management: Some(a("127.0.0.1:9091")),
            metrics: Some(a("0.0.0.0:9090")),
            postgres: Some(a("127.0.0.1:6432")),
        };
        let ports = agent_ports(&bound, [None, None], None);
        for p in [8080, 8443, 1080, 9091, 9090] {
            assert!(ports.contains(&AgentPort::Tcp(p)), "{p}: {ports:?}");
        }
        assert!(ports.contains(&AgentPort::Dns(5353)));
        let pg = [AgentPort::Tcp(6432), AgentPort::Tcp(0)];
        assert_eq!(
            squat_guard(ports.iter().chain(&pg)),
            [1080, 5353, 6432, 8080, 8443, 9090, 9091]
        );
    }
}
