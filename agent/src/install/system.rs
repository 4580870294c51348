//! The host's trust store and service manager.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::InstallError;
use super::layout::{ANCHOR_NAME, DEBIAN_ANCHOR_DIR, Layout, RHEL_ANCHOR_DIR, UNIT_NAME};
use super::manifest::TrustStore;

impl TrustStore {
    /// Picks the layout by which anchor directory exists (below the layout root), else by which
    /// refresh tool the host has. `None`: neither (the CA is then left for the operator to trust).
    pub fn detect(layout: &Layout) -> Option<Self> {
        if layout.path(DEBIAN_ANCHOR_DIR).is_dir() {
            return Some(Self::Debian);
        }
        if layout.path(RHEL_ANCHOR_DIR).is_dir() {
            return Some(Self::Rhel);
        }
        if which("update-ca-certificates").is_some() {
            return Some(Self::Debian);
        }
        if which("update-ca-trust").is_some() {
            return Some(Self::Rhel);
        }
        None
    }

    pub fn anchor_dir(self) -> &'static str {
        match self {
            Self::Debian => DEBIAN_ANCHOR_DIR,
            Self::Rhel => RHEL_ANCHOR_DIR,
        }
    }

    pub fn anchor(self) -> PathBuf {
        Path::new(self.anchor_dir()).join(ANCHOR_NAME)
    }

    /// The command that rebuilds the bundle from the anchors (also drops removed anchors).
    pub fn refresh_command(self) -> Command {
        match self {
            Self::Debian => {
                // Without --fresh: it drops the links of removed anchors by itself, and --fresh
                // would also delete links other tools placed in /etc/ssl/certs.
                Command::new(
                    which("update-ca-certificates")
                        .unwrap_or_else(|| "update-ca-certificates".into()),
                )
            }
            Self::Rhel => {
                let mut c = Command::new(
                    which("update-ca-trust").unwrap_or_else(|| "update-ca-trust".into()),
                );
                c.arg("extract");
                c
            }
        }
    }
}

/// `PATH` lookup plus the sbin directories, which a `sudo` PATH may lack.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(mut cmd: Command) -> Result<(), InstallError> {
    let what = describe(&cmd);
    let out = cmd.output().map_err(|e| InstallError::Command {
        cmd: what.clone(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InstallError::Command {
            cmd: what,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether systemd is the running init (sd_booted(3): /run/systemd/system exists).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    let mut c = Command::new("systemctl");
    c.args(args);
    run(c)
}

/// `systemctl is-active iron-agent`, or `None` when systemd does not run.
pub fn unit_state() -> Option<String> {
    if !systemd_running() {
        return None;
    }
    let out = Command::new("systemctl")
        .args(["is-active", UNIT_NAME])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
