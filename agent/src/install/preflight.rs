//! `install`'s preflight: the host checks `check-config` and `run` make (users and cgroups
//! exist, CA files a readable matching pair, `file` secret sources readable, eBPF
//! prerequisites), on the config that will be in place, before anything is written. The checks
//! themselves are the caller's (`app::preflight`; `app` depends on this module for `detach`,
//! so they are passed in rather than imported).

use std::path::{Path, PathBuf};

use crate::config::{self, Config};

use super::layout::{CA_CERT, CA_KEY, CONFIG, Layout};
use super::{InstallError, InstallOptions, generated_config, say};

/// What the host lacks for a config: errors refuse the install; warnings are printed (a dry run
/// reports the eBPF prerequisites as warnings, since it attaches nothing).
#[derive(Debug, Default)]
pub struct HostFindings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// The host checks: `(config, the file it was read from, dry_run)`.
pub type HostCheck<'a> = &'a dyn Fn(&Config, Option<&Path>, bool) -> HostFindings;

pub(super) fn run(
    layout: &Layout,
    opts: &InstallOptions,
    host: HostCheck<'_>,
) -> Result<(), InstallError> {
    let (mut cfg, file) = effective_config(layout, opts)?;
    own_ca(layout, &mut cfg);
    let found = host(&cfg, file.as_deref(), !layout.is_real());
    for w in &found.warnings {
        say(format!("preflight: warning: {w}"));
    }
    if !found.errors.is_empty() {
        return Err(InstallError::Preflight(found.errors));
    }
    say(if layout.is_real() {
        "preflight: users, cgroups, CA, secret files and eBPF prerequisites ok"
    } else {
        "preflight: users, cgroups, CA and secret files ok (eBPF prerequisites only reported: --root)"
    });
    Ok(())
}

/// The config the service will start with: `--config`, else the one already installed (never
/// overwritten), else the generated one.
fn effective_config(
    layout: &Layout,
    opts: &InstallOptions,
) -> Result<(Config, Option<PathBuf>), InstallError> {
    let load = |p: &Path| {
        config::load(p).map_err(|e| InstallError::Config {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })
    };
    if let Some(p) = &opts.config {
        return Ok((load(p)?, Some(p.clone())));
    }
    let installed = layout.path(CONFIG);
    if installed.exists() {
        return Ok((load(&installed)?, Some(installed)));
    }
    let text = generated_config(&opts.allow, &opts.govern_users, &opts.govern_cgroups);
    let env = |k: &str| std::env::var(k).ok();
    let cfg = config::load_str(&text, &env).map_err(|e| InstallError::Config {
        path: PathBuf::from(CONFIG),
        reason: e.to_string(),
    })?;
    Ok((cfg, None))
}

/// The CA at install's own paths is install's to make: checked where it is (below `--root`)
/// when it exists, and not required when install is about to generate it.
fn own_ca(layout: &Layout, cfg: &mut Config) {
    let (cert, key) = (Path::new(CA_CERT), Path::new(CA_KEY));
    if cfg.tls.ca_cert.as_deref() != Some(cert) || cfg.tls.ca_key.as_deref() != Some(key) {
        return;
    }
    if layout.path(cert).exists() || layout.path(key).exists() {
        cfg.tls.ca_cert = Some(layout.path(cert));
        cfg.tls.ca_key = Some(layout.path(key));
    } else {
        cfg.tls.ca_cert = None;
        cfg.tls.ca_key = None;
    }
}
