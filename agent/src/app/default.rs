//! The embedded default config: what `iron-agent run` uses without `--config`. Loopback
//! listeners on unprivileged ports, a CA generated into the state directory, and an allowlist
//! that denies everything, so a bare start is safe and useful for a first look.

use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigErrors};

pub const DEFAULT_CONFIG_YAML: &str = include_str!("default.yaml");

/// Where the default config keeps its CA: `$IRON_AGENT_STATE_DIR`, else `/var/lib/iron-agent`
/// for root, else `$XDG_STATE_HOME/iron-agent` or `~/.local/state/iron-agent`.
pub fn state_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = env("IRON_AGENT_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if crate::sys::is_root() {
        return PathBuf::from("/var/lib/iron-agent");
    }
    if let Some(x) = env("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&x).join("iron-agent");
    }
    let home = env("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".local/state/iron-agent")
}

/// The default config with its CA paths pointing into `state`, `IRON_*` overrides applied.
pub fn default_config(
    state: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut cfg = config::parse(DEFAULT_CONFIG_YAML)?;
    cfg.tls.ca_cert = Some(state.join("ca.crt"));
    cfg.tls.ca_key = Some(state.join("ca.key"));
    config::env::apply_overrides(&mut cfg, env)?;
    config::validate::validate(&cfg)?;
    Ok(cfg)
}
