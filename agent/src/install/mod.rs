//! `iron-agent install | uninstall | status`: set the agent up as a systemd service on this host
//! (CA, config, trust store, unit), undo exactly that, and show what is attached.
//!
//! Everything `install` creates is recorded in [`layout::MANIFEST`]; `uninstall` removes those
//! paths only (so a file that was there before is never deleted) and keeps the CA unless asked to
//! purge it. Each step prints one line to stdout.

mod docs;
mod files;
pub mod layout;
pub mod manifest;
mod preflight;
pub mod status;
pub mod system;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config;
use crate::ebpf::{self, InterceptConfig, InterceptError, Interceptor, Mode};
use crate::tls::{self, TlsError};
use files::{Put, install_file, put_file};
use layout::{
    BINARY, CA_CERT, CA_KEY, CONFIG, ETC_DIR, Layout, MANIFEST, STATE_DIR, UNIT, UNIT_NAME,
    UNIT_TEMPLATE,
};
use manifest::{Kind, Manifest, TrustStore, write_file};

pub use docs::PAGES as DOC_PAGES;
pub use preflight::{HostCheck, HostFindings};
pub use status::{StatusOptions, status};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0} must run as root (try: sudo iron-agent {0})")]
    NotRoot(&'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid:\n{reason}")]
    Config { path: PathBuf, reason: String },
    #[error("generating the CA: {0}")]
    Tls(#[from] TlsError),
    #[error("`{cmd}` failed: {reason}")]
    Command { cmd: String, reason: String },
    #[error("manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
    #[error("this host is not ready for the config; nothing was written:\n{}", .0.join("\n"))]
    Preflight(Vec<String>),
    #[error("detaching programs: {0}")]
    Intercept(#[from] InterceptError),
}

impl InstallError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Config to install instead of the generated one (validated first).
    pub config: Option<PathBuf>,
    /// Hosts for the generated allowlist (empty: deny everything).
    pub allow: Vec<String>,
    /// Govern only these users / cgroups (generated config: `default: exempt`); empty: govern
    /// every non-root uid (`default: redirect`).
    pub govern_users: Vec<String>,
    pub govern_cgroups: Vec<PathBuf>,
    /// Enable the unit but do not start it.
    pub no_start: bool,
    /// Install below this directory instead of `/` (tests); skips host commands.
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct UninstallOptions {
    /// Also remove the CA.
    pub purge: bool,
    pub root: Option<PathBuf>,
}

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// Installs; `host` makes the host checks of `check-config` and `run` on the config that will be
/// in place (see [`preflight`]).
pub fn install(opts: &InstallOptions, host: HostCheck<'_>) -> Result<(), InstallError> {
    let layout = Layout::new(opts.root.clone());
    if layout.is_real() && !crate::sys::is_root() {
        return Err(InstallError::NotRoot("install"));
    }
    // Validate before touching anything: a bad config must not leave a half-installed host.
    let supplied = match &opts.config {
        Some(p) => Some(validated_config(p)?),
        None => None,
    };
    preflight::run(&layout, opts, host)?;
    let mut m = Manifest::load(&layout)?.unwrap_or(Manifest {
        version: 1,
        ..Manifest::default()
    });

    m.mkdirs(&layout, Path::new(STATE_DIR))?;
    m.save(&layout)?;
    m.mkdirs(&layout, Path::new(ETC_DIR))?;
    m.save(&layout)?;

    install_ca(&layout, &mut m)?;
    m.save(&layout)?;
    install_config(&layout, &mut m, supplied.as_deref(), opts)?;
    m.save(&layout)?;
    install_binary(&layout, &mut m)?;
    m.save(&layout)?;
    docs::install(&layout, &mut m)?;
    m.save(&layout)?;
    install_file(
        &layout,
        &mut m,
        Path::new(UNIT),
        UNIT_TEMPLATE.as_bytes(),
        0o644,
        "systemd unit",
    )?;
    m.save(&layout)?;
    install_trust(&layout, &mut m)?;
    m.save(&layout)?;
    start_service(&layout, &mut m, opts.no_start)?;
    m.save(&layout)?;
    say(format!(
        "recorded what was created in {}",
        layout.path(MANIFEST).display()
    ));
    Ok(())
}

fn validated_config(path: &Path) -> Result<Vec<u8>, InstallError> {
    let cfg = config::load(path).map_err(|e| InstallError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let refused = crate::check::unsupported(&cfg);
    if !refused.is_empty() {
        return Err(InstallError::Config {
            path: path.to_path_buf(),
            reason: refused.join("\n"),
        });
    }
    fs::read(path).map_err(|e| InstallError::io(format!("reading {}", path.display()), e))
}

fn install_ca(layout: &Layout, m: &mut Manifest) -> Result<(), InstallError> {
    let (cert, key) = (layout.path(CA_CERT), layout.path(CA_KEY));
    match (cert.exists(), key.exists()) {
        (true, true) => {
            say(format!(
                "CA: kept existing {} and {}",
                cert.display(),
                key.display()
            ));
            return Ok(());
        }
        (false, false) => {}
        _ => {
            return Err(InstallError::Refused(format!(
                "only one of {} and {} exists; remove it or restore the other",
                cert.display(),
                key.display()
            )));
        }
    }
    let written = tls::generate_ca(&tls::GenerateCaOptions {
        outdir: layout.path(ETC_DIR),
        name: "iron-agent CA".into(),
        expiry_hours: 2160,
        alg: tls::CaAlgorithm::EcdsaP256,
    })?;
    // The CA survives uninstall unless purged: workloads may still hold certificates it signed.
    m.record(Path::new(CA_CERT), Kind::File, true);
    m.record(Path::new(CA_KEY), Kind::File, true);
    say(format!(
        "CA: generated {} (0644) and {} (0600)",
        written.cert_path.display(),
        written.key_path.display()
    ));
    Ok(())
}

/// The config written when none exists: eBPF interception for every non-root user (or only the
/// `govern_*` identities), loopback listeners on unprivileged ports, the installed CA, and an
/// allowlist of `allow`.
pub fn generated_config(allow: &[String], users: &[String], cgroups: &[PathBuf]) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let intercept = if users.is_empty() && cgroups.is_empty() {
        "  # Every uid except root and the agent: 80/443/53 go to the agent, the rest is denied.\n  \
         # To govern only some users or cgroups: `default: exempt` plus a `governed:` block.\n  \
         default: redirect\n"
            .to_string()
    } else {
        let list = |v: Vec<String>| v.join(", ");
        format!(
            "  # Only the governed identities go through the agent; every other uid is left alone.\n  \
             default: exempt\n  governed:\n    users: [{}]\n    cgroups: [{}]\n",
            list(users.iter().map(|u| quote(u)).collect()),
            list(
                cgroups
                    .iter()
                    .map(|c| quote(&c.to_string_lossy()))
                    .collect()
            ),
        )
    };
    let mut domains = String::new();
    if allow.is_empty() {
        domains.push_str(" []\n");
    } else {
        domains.push('\n');
        for h in allow {
            // JSON string syntax is valid YAML and escapes anything odd in a host name.
            domains.push_str(&format!(
                "        - {}\n",
                serde_json::Value::from(h.as_str())
            ));
        }
    }
    format!(
        "# Written by `iron-agent install`; edit freely (install never overwrites it).\n\
         # Apply changes with: systemctl restart iron-agent\n\
         dns:\n  listen: \"127.0.0.1:15053\"\n  proxy_ip: \"127.0.0.1\"\n\
         proxy:\n  http_listen: \"127.0.0.1:15080\"\n  https_listen: \"127.0.0.1:15443\"\n\
         metrics:\n  listen: \"127.0.0.1:15090\"\n\
         tls:\n  ca_cert: \"{CA_CERT}\"\n  ca_key: \"{CA_KEY}\"\n\
         intercept:\n  mode: ebpf\n{intercept}\
         transforms:\n  - name: allowlist\n    config:\n      domains:{domains}\
         log:\n  level: info\n"
    )
}

fn install_config(
    layout: &Layout,
    m: &mut Manifest,
    supplied: Option<&[u8]>,
    opts: &InstallOptions,
) -> Result<(), InstallError> {
    let allow = &opts.allow;
    let narrow = !opts.govern_users.is_empty() || !opts.govern_cgroups.is_empty();
    let real = layout.path(CONFIG);
    match supplied {
        None if real.exists() => {
            say(format!(
                "config: kept existing {} (never overwritten)",
                real.display()
            ));
            if !allow.is_empty() || narrow {
                say(
                    "config: --allow/--govern-* ignored because the config already exists; edit it instead",
                );
            }
            Ok(())
        }
        None => {
            let text = generated_config(allow, &opts.govern_users, &opts.govern_cgroups);
            write_file(&real, text.as_bytes(), 0o600)?;
            m.record(Path::new(CONFIG), Kind::File, false);
            let hosts = if allow.is_empty() {
                "none: all egress denied".to_string()
            } else {
                allow.join(",")
            };
            say(format!(
                "config: wrote {} (eBPF interception, allowed hosts: {hosts})",
                real.display()
            ));
            if narrow {
                say(format!(
                    "config: governs only users [{}] and cgroups [{}] (`default: exempt`); every other uid keeps its network",
                    opts.govern_users.join(", "),
                    opts.govern_cgroups
                        .iter()
                        .map(|c| c.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else {
                say(
                    "config: `default: redirect` governs EVERY non-root uid of this host, system accounts \
                     (_apt, systemd-timesync, ...) included: their web traffic goes through the agent's \
                     allowlist and all other egress is denied. To start narrow, reinstall with \
                     --govern-user USER / --govern-cgroup PATH, or edit intercept: in the config",
                );
            }
            Ok(())
        }
        Some(bytes) => install_file(layout, m, Path::new(CONFIG), bytes, 0o600, "config"),
    }
}

fn install_binary(layout: &Layout, m: &mut Manifest) -> Result<(), InstallError> {
    let exe = std::env::current_exe().map_err(|e| InstallError::io("locating this binary", e))?;
    let dest = layout.path(BINARY);
    if fs::canonicalize(&dest).ok() == fs::canonicalize(&exe).ok() {
        say(format!("binary: running from {} already", dest.display()));
        return Ok(());
    }
    let bytes =
        fs::read(&exe).map_err(|e| InstallError::io(format!("reading {}", exe.display()), e))?;
    install_file(layout, m, Path::new(BINARY), &bytes, 0o755, "binary")
}

fn install_trust(layout: &Layout, m: &mut Manifest) -> Result<(), InstallError> {
    let Some(store) = TrustStore::detect(layout) else {
        say(format!(
            "trust store: no Debian/Ubuntu or RHEL trust store found; trust {} in your clients yourself",
            layout.path(CA_CERT).display()
        ));
        return Ok(());
    };
    let cert = fs::read(layout.path(CA_CERT))
        .map_err(|e| InstallError::io(format!("reading {}", layout.path(CA_CERT).display()), e))?;
    install_file(layout, m, &store.anchor(), &cert, 0o644, "trust store")?;
    m.trust_store = Some(store);
    refresh_trust(layout, store)
}

fn refresh_trust(layout: &Layout, store: TrustStore) -> Result<(), InstallError> {
    let cmd = store.refresh_command();
    let what = system::describe(&cmd);
    if !layout.is_real() {
        say(format!("trust store: skipped `{what}` (--root)"));
        return Ok(());
    }
    system::run(cmd)?;
    say(format!("trust store: ran `{what}`"));
    Ok(())
}

fn start_command() -> String {
    format!("{BINARY} run --config {CONFIG}")
}

fn start_service(layout: &Layout, m: &mut Manifest, no_start: bool) -> Result<(), InstallError> {
    if !layout.is_real() {
        say("service: skipped systemctl (--root)");
        return Ok(());
    }
    if !system::systemd_running() {
        say(format!(
            "service: systemd is not running on this host, so {UNIT_NAME} was neither enabled nor started; start the agent with: {}",
            start_command()
        ));
        return Ok(());
    }
    system::systemctl(&["daemon-reload"])?;
    if no_start {
        system::systemctl(&["enable", UNIT_NAME])?;
        say(format!(
            "service: enabled {UNIT_NAME} (not started: --no-start; start with `systemctl start {UNIT_NAME}`)"
        ));
    } else {
        system::systemctl(&["enable", UNIT_NAME])?;
        // restart, not start: a reinstall must pick up a new binary or config.
        system::systemctl(&["restart", UNIT_NAME])?;
        say(format!("service: enabled and started {UNIT_NAME}"));
    }
    m.unit_enabled = true;
    Ok(())
}

pub fn uninstall(opts: &UninstallOptions) -> Result<(), InstallError> {
    let layout = Layout::new(opts.root.clone());
    if layout.is_real() && !crate::sys::is_root() {
        return Err(InstallError::NotRoot("uninstall"));
    }
    let Some(m) = Manifest::load(&layout)? else {
        say(format!(
            "nothing to uninstall: no manifest at {} (iron-agent install was not run here)",
            layout.path(MANIFEST).display()
        ));
        return Ok(());
    };
    let installed_config = layout.path(CONFIG);
    let pin_dir = pin_dir_of(&installed_config);

    if layout.is_real() && system::systemd_running() && m.created(Path::new(UNIT)) {
        // The unit may already be gone from systemd's view; a failure here must not stop cleanup.
        match system::systemctl(&["disable", "--now", UNIT_NAME]) {
            Ok(()) => say(format!("service: stopped and disabled {UNIT_NAME}")),
            Err(e) => say(format!("service: {e} (continuing)")),
        }
    } else if layout.is_real() {
        say("service: systemd is not running; nothing to stop");
    } else {
        say("service: skipped systemctl (--root)");
    }

    if layout.is_real() {
        say(detach(&pin_dir)?);
    } else {
        say(format!(
            "programs: skipped detaching {} (--root)",
            pin_dir.display()
        ));
    }

    let mut kept = remove_created(&layout, &m, opts.purge)?;
    if let Some(store) = m.trust_store {
        if store == TrustStore::Debian && layout.is_real() {
            system::debian_forget_anchor()?;
        }
        refresh_trust(&layout, store)?;
    }
    if layout.is_real() && system::systemd_running() && m.created(Path::new(UNIT)) {
        let _ = system::systemctl(&["daemon-reload"]);
    }
    if kept.created.iter().any(|e| layout.path(&e.path).exists()) {
        kept.created.retain(|e| layout.path(&e.path).exists());
        kept.mkdirs(&layout, Path::new(STATE_DIR))?;
        kept.save(&layout)?;
        say(format!(
            "recorded the kept files in {} (uninstall --purge removes them)",
            layout.path(MANIFEST).display()
        ));
    }
    Ok(())
}

/// Removes what the manifest says install created (last first), except what is kept; returns
/// the manifest of the kept entries.
fn remove_created(layout: &Layout, m: &Manifest, purge: bool) -> Result<Manifest, InstallError> {
    // The manifest goes first so its directory can be removed with the others; the kept
    // entries are written back below.
    Manifest::remove_file(layout)?;
    let mut kept = Manifest {
        version: 1,
        ..Manifest::default()
    };
    for e in m.created.iter().rev() {
        let real = layout.path(&e.path);
        if e.keep && !purge {
            say(format!(
                "kept {} (use --purge to remove it)",
                real.display()
            ));
            kept.created.insert(0, e.clone());
            continue;
        }
        let res = match e.kind {
            Kind::File => fs::remove_file(&real),
            Kind::Dir => fs::remove_dir(&real),
        };
        match res {
            Ok(()) => say(format!("removed {}", real.display())),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                say(format!("{} was already gone", real.display()))
            }
            Err(err) if e.kind == Kind::Dir && err.kind() == ErrorKind::DirectoryNotEmpty => {
                say(format!("kept {} (not empty)", real.display()));
                kept.created.insert(0, e.clone());
            }
            Err(err) => {
                return Err(InstallError::io(
                    format!("removing {}", real.display()),
                    err,
                ));
            }
        }
    }
    Ok(kept)
}

/// The pin directory the installed config uses (the default when it cannot be read).
fn pin_dir_of(config_path: &Path) -> PathBuf {
    config::load(config_path)
        .map(|c| c.intercept.pin_dir)
        .unwrap_or_else(|_| config::intercept::InterceptConfig::default().pin_dir)
}

/// Detaches the programs pinned under `pin_dir` and removes the pins. Adopting rewrites the
/// listener config, so it is written with `default: exempt` first: for the moment until the pins
/// are gone nobody is newly denied.
pub fn detach(pin_dir: &Path) -> Result<String, InstallError> {
    if !pin_dir.exists() {
        return Ok(format!("programs: none pinned at {}", pin_dir.display()));
    }
    if ebpf::is_installed(pin_dir) {
        let cfg = InterceptConfig {
            default_mode: Mode::Exempt,
            pin_dir: pin_dir.to_path_buf(),
            ..InterceptConfig::default()
        };
        if let Ok(icpt) = Interceptor::adopt(&cfg) {
            icpt.detach_and_unpin()?;
            return Ok(format!(
                "programs: detached and removed pins in {}",
                pin_dir.display()
            ));
        }
    }
    // Incomplete or unreadable pins: removing the files is what detaches them anyway.
    fs::remove_dir_all(pin_dir)
        .map_err(|e| InstallError::io(format!("removing pins in {}", pin_dir.display()), e))?;
    Ok(format!(
        "programs: removed pin directory {}",
        pin_dir.display()
    ))
}

/// `iron-agent detach`: releases the programs pinned for `config` (default: the installed
/// config), or at `pin_dir`.
pub fn detach_command(
    config: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
) -> Result<(), InstallError> {
    if !crate::sys::is_root() {
        return Err(InstallError::NotRoot("detach"));
    }
    let dir = match (pin_dir, config) {
        (Some(d), _) => d,
        (None, Some(c)) => {
            config::load(&c)
                .map(|c| c.intercept.pin_dir)
                .map_err(|e| InstallError::Config {
                    path: c.clone(),
                    reason: e.to_string(),
                })?
        }
        (None, None) => pin_dir_of(Path::new(CONFIG)),
    };
    say(detach(&dir)?);
    say(
        "governed users now have their network back, unpoliced; `iron-agent run` (or systemctl start iron-agent) attaches the programs again",
    );
    Ok(())
}
