//! `iron-agent init --enrollment-token TOKEN` (and `install --enrollment-token`): join a
//! control plane with one command.
//!
//! The enrollment token is traded for a proxy token with `POST /api/v1/proxy/enroll`
//! ([`client`]); the proxy token is stored in the state directory (0600, never printed), and a
//! config preconfigured for managed mode is written ([`config`]) whose `control_plane.token_file`
//! names it. Unless `--no-service`, the service is then installed and started exactly as
//! `iron-agent install --config` does. Everything that can refuse is checked before the token
//! is spent; a host that holds a proxy token already is refused unless `--force`.

pub mod client;
pub mod config;
mod store;

use std::path::{Path, PathBuf};

use crate::install::InstallError;
use crate::install::layout::{Layout, STATE_DIR};
use crate::managed::{self, DEFAULT_URL};
use crate::secrets::SecretValue;

/// Why init stopped. No variant carries the enrollment token or the proxy token.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{field}: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error(
        "this host is already enrolled ({} exists); use --force to enroll it again with a new token",
        .0.display()
    )]
    AlreadyEnrolled(PathBuf),
    #[error(
        "{0} must run as root to install the service (try: sudo iron-agent {0}, or --no-service)"
    )]
    NotRoot(&'static str),
    #[error(
        "enrollment refused: invalid_token: the control plane does not know this enrollment token (check that it was copied whole, or create a new one)"
    )]
    InvalidToken,
    #[error(
        "enrollment refused: token_expired: the enrollment token has expired; create a new one on the control plane"
    )]
    Expired,
    #[error(
        "enrollment refused: token_exhausted: the enrollment token has been used its maximum number of times; create a new one (or one with more max uses)"
    )]
    Exhausted,
    #[error("enrollment refused: {code}: {message} (HTTP {status})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("control plane {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("control plane answered the enrollment with an invalid body: {0}")]
    Body(String),
    #[error("config {path}:\n{reason}")]
    Config { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "enrolled as proxy {proxy}, but {what}; delete that proxy on the control plane and enroll again"
    )]
    AfterEnroll { proxy: String, what: String },
    #[error("generating the CA: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Install(#[from] InstallError),
}

impl EnrollError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// What `init` (or `install --enrollment-token`) was asked to do.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// `init` or `install`: names the command in messages.
    pub command: &'static str,
    pub enrollment_token: SecretValue,
    /// `--control-plane`; default `$IRON_CONTROL_PLANE_URL`, else [`DEFAULT_URL`].
    pub control_plane: Option<String>,
    pub allow_insecure: bool,
    /// Default `/var/lib/iron-agent`.
    pub state_dir: Option<PathBuf>,
    pub no_service: bool,
    pub force: bool,
    /// The proxy's name on the control plane; default: this host's name.
    pub name: Option<String>,
    /// Host settings to start from instead of the generated ones.
    pub config: Option<PathBuf>,
    pub govern_users: Vec<String>,
    pub govern_cgroups: Vec<PathBuf>,
    /// Service: enable the unit but do not start it.
    pub no_start: bool,
    /// Service: install below this directory, no host commands (a dry run).
    pub root: Option<PathBuf>,
}

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// Where things go: system paths (what the config names) and real ones (below `--root`).
struct Plan {
    layout: Layout,
    url: String,
    /// System path of the state directory (absolute).
    state_dir: PathBuf,
    token_file: PathBuf,
    /// The config to write, complete.
    text: String,
    /// `--no-service`: where it goes; a generated foreground config also gets a CA there.
    foreground: Option<PathBuf>,
}

/// Runs `init`: checks, enrolls, stores the token, writes the config, installs the service.
pub fn init(opts: &InitOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<(), EnrollError> {
    let plan = plan(opts, env)?;
    let cfg = crate::config::load_str(&plan.text, env).map_err(|e| EnrollError::Config {
        path: "(the config init writes)".into(),
        reason: e.to_string(),
    })?;
    let name = opts.name.clone().unwrap_or_else(host_name);
    let enrolled = store::enroll_with(&cfg, &plan.url, &opts.enrollment_token, &name)?;
    say(format!(
        "enrolled: proxy {} ({name}) with {}, tags: [{}]",
        enrolled.id,
        plan.url,
        enrolled.tags.join(", ")
    ));
    let after = |e: EnrollError| EnrollError::AfterEnroll {
        proxy: enrolled.id.clone(),
        what: e.to_string(),
    };
    let real_token = plan.layout.path(&plan.token_file);
    store::write_secret(&real_token, &enrolled.token).map_err(after)?;
    say(format!("token: stored in {} (0600)", real_token.display()));
    match &plan.foreground {
        Some(path) => store::write_foreground(&plan, path, opts.config.is_none()).map_err(after),
        None => store::install_service(&plan, opts).map_err(after),
    }
}

/// Everything decided and checked before the token is spent.
fn plan(opts: &InitOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, EnrollError> {
    let url = control_plane_url(opts, env)?;
    let token = opts.enrollment_token.expose();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EnrollError::Setting {
            field: "--enrollment-token",
            reason: "is empty or has whitespace in it".into(),
        });
    }
    let layout = Layout::new(opts.root.clone());
    if !opts.no_service && layout.is_real() && !crate::sys::is_root() {
        return Err(EnrollError::NotRoot(opts.command));
    }
    let state_dir = match &opts.state_dir {
        Some(d) => std::path::absolute(d)
            .map_err(|e| EnrollError::io(format!("--state-dir {}", d.display()), e))?,
        None => PathBuf::from(STATE_DIR),
    };
    let token_file = state_dir.join(config::TOKEN_FILE);
    if layout.path(&token_file).exists() && !opts.force {
        return Err(EnrollError::AlreadyEnrolled(layout.path(&token_file)));
    }
    let host = host_settings(opts, &state_dir)?;
    let text = format!(
        "{host}{}",
        config::control_plane_block(&url, &token_file, opts.allow_insecure)
    );
    let foreground = opts
        .no_service
        .then(|| layout.path(state_dir.join(config::CONFIG_FILE)));
    if foreground.is_none() {
        store::check_config_replaceable(&layout)?;
    }
    Ok(Plan {
        layout,
        url,
        state_dir,
        token_file,
        text,
        foreground,
    })
}

/// `--control-plane`, else `IRON_CONTROL_PLANE_URL`, else the default; plain HTTP only to
/// loopback unless `--allow-insecure`, as for the sync call.
fn control_plane_url(
    opts: &InitOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnrollError> {
    let (field, url) = match &opts.control_plane {
        Some(u) => ("--control-plane", u.clone()),
        None => match env("IRON_CONTROL_PLANE_URL").filter(|v| !v.is_empty()) {
            Some(u) => ("IRON_CONTROL_PLANE_URL", u),
            None => ("--control-plane", DEFAULT_URL.to_string()),
        },
    };
    let setting = |reason: String| EnrollError::Setting { field, reason };
    managed::check_url_syntax(&url).map_err(setting)?;
    managed::check_transport(&url, opts.allow_insecure).map_err(|r| {
        setting(r.replace("control_plane.allow_insecure: true", "--allow-insecure"))
    })?;
    Ok(url.trim_end_matches('/').to_string())
}

/// The host part of the config: the operator's `--config` (validated, without a
/// `control_plane` block), or a generated one.
fn host_settings(opts: &InitOptions, state_dir: &Path) -> Result<String, EnrollError> {
    let Some(path) = &opts.config else {
        return Ok(if opts.no_service {
            config::foreground_config(state_dir)
        } else {
            config::service_config(&opts.govern_users, &opts.govern_cgroups)
        });
    };
    let bad = |reason: String| EnrollError::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnrollError::io(format!("reading {}", path.display()), e))?;
    crate::config::load(path).map_err(|e| bad(e.to_string()))?;
    if config::has_control_plane(&text) {
        return Err(bad(
            "has a control_plane block; remove it: init writes control_plane itself".into(),
        ));
    }
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// This host's name (the proxy's default name on the control plane).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "iron-agent".into())
}
