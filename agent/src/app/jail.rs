//! `iron-agent run [--config FILE] [--user NAME] -- CMD ARGS...`: run one command jailed by a
//! private agent instance.
//!
//! The agent runs in this process with its own pin directory and ephemeral loopback listeners, so
//! concurrent jails and an installed service do not interfere. Only a fresh cgroup is governed
//! (`default: exempt` for everything else); CMD joins that cgroup before `exec`, so none of its
//! instructions run ungoverned. When CMD ends, everything left in the cgroup is killed, the agent
//! stops, its programs are detached and the cgroup removed. CMD's exit status becomes ours (128 +
//! signal when it was killed). Fail closed: when the agent cannot start, CMD is not run.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};

use crate::config::intercept::{IdentityMode, InterceptMode};
use crate::config::{Config, ListenAddr};
use crate::ebpf;
use crate::sys::{self, Signal};

use super::identity::{Account, Table};

/// How long the agent may take to bind its listeners and attach its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may drain after CMD is done before it is dropped.
const STOP_TIMEOUT: Duration = Duration::from_secs(12);

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(
        "`iron-agent run -- CMD` must run as root: it attaches eBPF programs and creates a cgroup (try: sudo iron-agent run ... -- CMD)"
    )]
    NotRoot,
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Ebpf(#[from] ebpf::InterceptError),
    #[error("the agent did not start, so the command was not run: {0}")]
    AgentFailed(String),
    #[error("interrupted by {0} before the command started")]
    Interrupted(&'static str),
}

fn io(context: impl Into<String>, source: std::io::Error) -> JailError {
    JailError::Io {
        context: context.into(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct JailOptions {
    /// Run CMD as this user instead of the invoking one.
    pub user: Option<String>,
    /// Variables to leave in CMD's environment although a secret source reads them.
    pub keep_env: Vec<String>,
    pub cmd: Vec<OsString>,
    /// `--learn`: every allowlist in learn mode.
    pub learn: bool,
    /// `--summary FILE`: where the agent copies every audit record (`log.audit_copy`), for the
    /// summary written when the jail is done.
    pub audit_copy: Option<PathBuf>,
}

/// The variables removed from CMD's environment: every one a secret source of `cfg` reads
/// (the agent injects those credentials; the workload must not read them), except `keep`.
pub fn scrubbed_env(cfg: &Config, keep: &[String]) -> Vec<String> {
    let mut vars = crate::config::secret_env::secret_env_vars(cfg);
    // The agent's own OTEL export reads the collector's auth headers from these.
    for v in OTEL_HEADER_VARS {
        if std::env::var_os(v).is_some() {
            vars.insert(v.to_string());
        }
    }
    vars.into_iter()
        .filter(|v| !keep.iter().any(|k| k == v))
        .collect()
}

/// Variables the OTEL exporter reads credentials (collector auth headers) from.
const OTEL_HEADER_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
];

/// The primary group plus every /etc/group entry listing `user` (what initgroups(3) computes
/// from files), looked up before fork so the child only makes system calls.
fn groups_of(user: &str, primary: u32) -> Vec<u32> {
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    let mut out = vec![primary];
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        let (Some(gid), Some(members)) = (f.get(2).and_then(|g| g.parse().ok()), f.get(3)) else {
            continue;
        };
        if members.split(',').any(|m| m == user) && !out.contains(&gid) {
            out.push(gid);
        }
    }
    out
}

/// Who CMD runs as: `--user`, else the user who invoked sudo, else ourselves (`None`: no change).
fn target_account(
    user: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Account>, JailError> {
    let all = Table::read();
    if let Some(u) = user {
        let by_name = all.by_name(u);
        let by_uid = u.parse::<u32>().ok().and_then(|n| all.by_uid(n));
        return by_name
            .or(by_uid)
            .cloned()
            .map(Some)
            .ok_or_else(|| JailError::UnknownUser(u.to_string()));
    }
    let Some(uid) = env("SUDO_UID").and_then(|u| u.parse::<u32>().ok()) else {
        return Ok(None);
    };
    let gid = env("SUDO_GID").and_then(|g| g.parse::<u32>().ok());
    Ok(Some(match all.by_uid(uid).cloned() {
        Some(mut a) => {
            a.gid = gid.unwrap_or(a.gid);
            a
        }
        None => Account {
            name: env("SUDO_USER").unwrap_or_default(),
            uid,
            gid: gid.unwrap_or(uid),
            home: "/".into(),
        },
    }))
}

/// The fresh cgroup CMD runs in; removed (after killing what is left in it) on drop.
struct JailCgroup {
    path: PathBuf,
}

impl JailCgroup {
    fn create() -> Result<Self, JailError> {
        let mount = ebpf::cgroup2_mount()?;
        let path = mount.join(format!("iron-agent.run.{}", std::process::id()));
        fs::create_dir(&path).map_err(|e| io(format!("creating cgroup {}", path.display()), e))?;
        Ok(Self { path })
    }

    fn procs(&self) -> Vec<String> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Kills everything still in the cgroup (CMD's background children): once the programs are
    /// detached they would run ungoverned.
    fn kill_all(&self) {
        if self.procs().is_empty() {
            return;
        }
        if fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            // Kernels before 5.14 have no cgroup.kill.
            for pid in self.procs() {
                if let Ok(pid) = pid.parse::<u32>() {
                    sys::signal(pid, Signal::SIGKILL);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.procs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for JailCgroup {
    fn drop(&mut self) {
        self.kill_all();
        if let Err(e) = fs::remove_dir(&self.path) {
            eprintln!("warning: removing cgroup {}: {e}", self.path.display());
        }
    }
}

/// Removes this run's pins on drop (after the agent is stopped), so nothing stays attached.
struct JailPins(PathBuf);

impl Drop for JailPins {
    fn drop(&mut self) {
        if let Err(e) = crate::install::detach(&self.0) {
            eprintln!("warning: {e}");
        }
    }
}

/// A loopback port that is free right now (for the metrics listener, which we poll for
/// readiness; the other listeners bind port 0 and the programs learn the bound ports).
fn free_port() -> Result<u16, JailError> {
    let l =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| io("picking a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| io("picking a free port", e))
}

/// Makes `cfg` this jail's: only `cgroup` governed, private pins and ports. `user` (CMD's
/// account, when not root or the agent's own) is also governed by uid while the jail runs, so
/// a process of that user started outside the cgroup (cron, at, `systemd-run`, `ssh
/// localhost`) is redirected or denied too, never free; an `exempt` entry for it is dropped.
pub fn jail_config(
    mut cfg: Config,
    cgroup: &Path,
    pin_dir: PathBuf,
    metrics_port: u16,
    user: Option<&Account>,
) -> Config {
    let lo = |port| ListenAddr {
        host: "127.0.0.1".into(),
        port,
    };
    cfg.intercept.mode = InterceptMode::Ebpf;
    cfg.intercept.default = IdentityMode::Exempt;
    cfg.intercept.pin_dir = pin_dir;
    cfg.intercept.governed.cgroups.push(cgroup.to_path_buf());
    if let Some(a) = user.filter(|a| a.uid != 0 && a.uid != sys::euid()) {
        let icpt = &mut cfg.intercept;
        icpt.exempt.uids.retain(|u| *u != a.uid);
        icpt.exempt.users.retain(|u| *u != a.name);
        let listed = |ids: &crate::config::intercept::Identities| {
            ids.uids.contains(&a.uid) || ids.users.contains(&a.name)
        };
        // A `deny` or policy entry of its own already governs it (more strictly or with its
        // own pipeline); otherwise it gets the jail's (top-level) pipeline.
        let own = listed(&icpt.deny)
            || icpt
                .policies
                .iter()
                .any(|p| p.uids.contains(&a.uid) || p.users.contains(&a.name));
        if !own && !listed(&icpt.governed) {
            icpt.governed.uids.push(a.uid);
        }
    }
    cfg.proxy.http_listen = lo(0);
    cfg.proxy.https_listen = lo(0);
    cfg.dns.listen = lo(0);
    cfg.metrics.listen = lo(metrics_port);
    cfg
}

/// Runs the jail; returns CMD's exit status. `cfg` is the loaded config (or the default one).
pub fn run(mut cfg: Config, opts: &JailOptions) -> Result<u8, JailError> {
    if !sys::is_root() {
        return Err(JailError::NotRoot);
    }
    let env = |k: &str| std::env::var(k).ok();
    let account = target_account(opts.user.as_deref(), &env)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io("starting the runtime", e))?;

    // Order matters for cleanup: drops run in reverse, so the cgroup is emptied and removed
    // after the pins are gone, and the pins are removed after the agent stopped.
    let cgroup = JailCgroup::create()?;
    let pins = JailPins(PathBuf::from(format!(
        "/sys/fs/bpf/iron-agent-run-{}",
        std::process::id()
    )));
    let metrics_port = free_port()?;
    let scrub = scrubbed_env(&cfg, &opts.keep_env);
    if !scrub.is_empty() {
        tracing::info!(
            target: crate::telemetry::STARTUP,
            vars = %scrub.join(","),
            kept = %opts.keep_env.join(","),
            "secret source variables removed from the command's environment"
        );
    }
    if opts.learn {
        crate::config::validate::learn_everywhere(&mut cfg);
    }
    cfg.log.audit_copy = opts.audit_copy.clone();
    let cfg = jail_config(
        cfg,
        &cgroup.path,
        pins.0.clone(),
        metrics_port,
        account.as_ref(),
    );
    let cmd = Command {
        argv: &opts.cmd,
        account: account.as_ref(),
        scrub: &scrub,
    };
    let status = rt.block_on(supervise(cfg, &cgroup, metrics_port, &cmd));
    cgroup.kill_all();
    drop(rt);
    drop(pins);
    drop(cgroup);
    status
}

/// What to run in the jail, as whom, without which variables.
struct Command<'a> {
    argv: &'a [OsString],
    account: Option<&'a Account>,
    scrub: &'a [String],
}

async fn supervise(
    cfg: Config,
    cgroup: &JailCgroup,
    metrics_port: u16,
    cmd: &Command<'_>,
) -> Result<u8, JailError> {
    // Registered before the agent starts: a Ctrl-C during startup must reach our cleanup rather
    // than kill the process with the programs attached and the cgroup left behind.
    let mut sigs = Signals::new()?;
    let mut agent = tokio::spawn(super::run(cfg, None, None));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port));
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        tokio::select! {
            done = &mut agent => {
                let why = match done {
                    Ok(Ok(())) => "it stopped during startup".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(JailError::AgentFailed(why));
            }
            sig = sigs.recv() => {
                stop_agent(agent).await;
                return Err(JailError::Interrupted(sig.1));
            }
            ready = super::jail_ready::ready(metrics) => if ready { break },
        }
        if tokio::time::Instant::now() > deadline {
            agent.abort();
            return Err(JailError::AgentFailed(format!(
                "not ready after {}s",
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = match spawn_jailed(cgroup, cmd) {
        Ok(mut child) => {
            let pid = child.id();
            loop {
                tokio::select! {
                    st = child.wait() => break st.map(exit_code).map_err(|e| io("waiting for the command", e)),
                    sig = sigs.recv() => if let Some(pid) = pid { sys::signal(pid, sig.0) },
                }
            }
        }
        Err(e) => {
            let prog = cmd
                .argv
                .first()
                .map(|p| p.to_string_lossy())
                .unwrap_or_default();
            if e.kind() == std::io::ErrorKind::NotFound {
                eprintln!(
                    "error: command not found: {prog} (not in PATH and not a file; give its full path)"
                );
            } else {
                eprintln!("error: cannot run {prog}: {e}");
            }
            // Like a shell: 127 when the command does not exist, 126 when it cannot run.
            Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    };
    cgroup.kill_all();
    stop_agent(agent).await;
    status
}

/// Asks the agent to shut down the way a signal would, and waits a bounded time.
async fn stop_agent(agent: tokio::task::JoinHandle<Result<(), super::AppError>>) {
    sys::signal(std::process::id(), Signal::SIGTERM);
    let abort = agent.abort_handle();
    match tokio::time::timeout(STOP_TIMEOUT, agent).await {
        Ok(Ok(Err(e))) => eprintln!("warning: agent: {e}"),
        Ok(_) => {}
        Err(_) => abort.abort(),
    }
}

fn exit_code(st: std::process::ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        _ => 1,
    }
}

struct Signals {
    int: SignalStream,
    term: SignalStream,
    hup: SignalStream,
    quit: SignalStream,
}

impl Signals {
    fn new() -> Result<Self, JailError> {
        let s = |k| signal(k).map_err(|e| io("installing signal handlers", e));
        Ok(Self {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
            quit: s(SignalKind::quit())?,
        })
    }

    async fn recv(&mut self) -> (Signal, &'static str) {
        tokio::select! {
            _ = self.int.recv() => (Signal::SIGINT, "SIGINT"),
            _ = self.term.recv() => (Signal::SIGTERM, "SIGTERM"),
            _ = self.hup.recv() => (Signal::SIGHUP, "SIGHUP"),
            _ = self.quit.recv() => (Signal::SIGQUIT, "SIGQUIT"),
        }
    }
}

fn spawn_jailed(cgroup: &JailCgroup, cmd: &Command<'_>) -> std::io::Result<tokio::process::Child> {
    let account = cmd.account;
    let (prog, args) = cmd
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"))?;
    // Opened here, written in the child: the open-time credentials (root) authorize the move,
    // and "0" means "the writing process", so the child needs no formatting after fork.
    let procs = OpenOptions::new()
        .write(true)
        .open(cgroup.path.join("cgroup.procs"))?;
    let mut c = tokio::process::Command::new(prog);
    c.args(args);
    for v in cmd.scrub {
        c.env_remove(v);
    }
    let ident = account.map(|a| sys::Identity {
        uid: a.uid,
        gid: a.gid,
        groups: groups_of(&a.name, a.gid),
    });
    if let Some(a) = account {
        c.env("HOME", &a.home)
            .env("USER", &a.name)
            .env("LOGNAME", &a.name);
    }
    sys::join_cgroup_and_become(&mut c, procs, ident);
    // The closure holding `procs` (and so the descriptor) is dropped with `c`, after spawn.
    c.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(
            exit_code(std::process::ExitStatus::from_raw(sys::signal_number(
                Signal::SIGKILL
            ))),
            137
        );
    }

    #[test]
    fn sudo_user_is_default() {
        let env = |k: &str| match k {
            "SUDO_UID" => Some("0".to_string()),
            "SUDO_GID" => Some("0".to_string()),
            _ => None,
        };
        let a = target_account(None, &env).unwrap().unwrap();
        assert_eq!((a.uid, a.gid, a.name.as_str()), (0, 0, "root"));
        assert!(target_account(None, &|_| None).unwrap().is_none());
        assert!(matches!(
            target_account(Some("no-such-user-xyz"), &|_| None),
            Err(JailError::UnknownUser(_))
        ));
    }

    #[test]
    fn secret_variables_are_scrubbed_unless_kept() {
        let yaml = "dns: {proxy_ip: 10.0.0.2}\ntls: {mode: sni-only}\ntransforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: GH_TOKEN}\n          inject: {header: Authorization}\n          rules: [{host: a.test}]\n        - source: {type: env, var: NPM_TOKEN}\n          inject: {header: X-Npm}\n          rules: [{host: b.test}]\n";
        let cfg = crate::config::parse(yaml).unwrap();
        assert_eq!(scrubbed_env(&cfg, &[]), ["GH_TOKEN", "NPM_TOKEN"]);
        assert_eq!(scrubbed_env(&cfg, &["NPM_TOKEN".into()]), ["GH_TOKEN"]);
    }

    #[test]
    fn config_is_jailed() {
        let cfg = crate::config::parse("log:\n  level: info\n").unwrap();
        let cfg = jail_config(
            cfg,
            Path::new("/sys/fs/cgroup/x"),
            "/sys/fs/bpf/y".into(),
            4242,
            None,
        );
        assert_eq!(cfg.intercept.default, IdentityMode::Exempt);
        assert_eq!(
            cfg.intercept.governed.cgroups,
            [PathBuf::from("/sys/fs/cgroup/x")]
        );
        assert_eq!(cfg.metrics.listen.port, 4242);
        assert_eq!(cfg.proxy.http_listen.port, 0);
        assert!(cfg.intercept.governed.uids.is_empty());
    }

    #[test]
    fn the_jailed_user_stays_governed_outside_the_cgroup() {
        let cfg = crate::config::parse(
            "intercept:\n  mode: ebpf\n  exempt: {users: [alice], uids: [4711]}\n",
        )
        .unwrap();
        let alice = Account {
            name: "alice".into(),
            uid: 4711,
            gid: 4711,
            home: "/".into(),
        };
        let cgroup = Path::new("/sys/fs/cgroup/x");
        let cfg = jail_config(cfg, cgroup, "/sys/fs/bpf/y".into(), 1, Some(&alice));
        assert_eq!(cfg.intercept.governed.uids, [4711]);
        assert!(cfg.intercept.exempt.uids.is_empty() && cfg.intercept.exempt.users.is_empty());
        // Root (CMD run without --user under plain root) is never governed by uid.
        let root = Account { uid: 0, ..alice };
        let cfg = crate::config::parse("log:\n  level: info\n").unwrap();
        let cfg = jail_config(cfg, cgroup, "/sys/fs/bpf/y".into(), 1, Some(&root));
        assert!(cfg.intercept.governed.uids.is_empty());
    }
}
