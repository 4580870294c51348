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

/// Debian's `update-ca-certificates` only notices a removed local anchor with `--fresh` (which
/// relinks every certificate and so touches files we do not own): it keeps our links in
/// /etc/ssl/certs and never tells its hooks (the Java keystore) about the removal. So we do what
/// its own `remove()` does: unlink our `.pem` and its hash links, then run the hooks with
/// `-/etc/ssl/certs/iron-agent.pem`. The bundle itself is rebuilt by the refresh that follows.
pub fn debian_forget_anchor() -> Result<(), InstallError> {
    let certs = Path::new("/etc/ssl/certs");
    let pem_name = ANCHOR_NAME.replace(".crt", ".pem");
    let anchor = Path::new(DEBIAN_ANCHOR_DIR).join(ANCHOR_NAME);
    let Ok(entries) = std::fs::read_dir(certs) else {
        return Ok(());
    };
    let mut removed_pem = false;
    for e in entries.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target == anchor || target == Path::new(&pem_name) {
            std::fs::remove_file(e.path())
                .map_err(|err| InstallError::io(format!("removing {}", e.path().display()), err))?;
            removed_pem |= target == anchor;
        }
    }
    let hooks = Path::new("/etc/ca-certificates/update.d");
    if !removed_pem || !hooks.is_dir() {
        return Ok(());
    }
    let mut list: Vec<PathBuf> = std::fs::read_dir(hooks)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    list.sort();
    for hook in list {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let executable = std::fs::metadata(&hook)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            continue;
        }
        let child = Command::new(&hook)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else { continue };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "-{}", certs.join(&pem_name).display());
        }
        // A failing hook (e.g. no Java installed) must not fail the uninstall; it is reported.
        if let Ok(out) = child.wait_with_output()
            && !out.status.success()
        {
            eprintln!(
                "warning: {} failed: {}",
                hook.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}
