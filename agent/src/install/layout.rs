//! Where `install` puts things. Every path is a system path, optionally below a `--root` prefix
//! (tests install into a temporary directory with it).

use std::path::{Path, PathBuf};

pub const ETC_DIR: &str = "/etc/iron-agent";
pub const CONFIG: &str = "/etc/iron-agent/config.yaml";
pub const CA_CERT: &str = "/etc/iron-agent/ca.crt";
pub const CA_KEY: &str = "/etc/iron-agent/ca.key";
pub const STATE_DIR: &str = "/var/lib/iron-agent";
pub const MANIFEST: &str = "/var/lib/iron-agent/install-manifest.json";
pub const BINARY: &str = "/usr/local/bin/iron-agent";
pub const UNIT: &str = "/etc/systemd/system/iron-agent.service";
pub const UNIT_NAME: &str = "iron-agent";
/// The pages of docs/ (the unit's `Documentation=` points here).
pub const DOC_DIR: &str = "/usr/share/doc/iron-agent";

/// Debian/Ubuntu: anchors in /usr/local/share/ca-certificates, bundle rebuilt by
/// `update-ca-certificates`.
pub const DEBIAN_ANCHOR_DIR: &str = "/usr/local/share/ca-certificates";
/// RHEL/Fedora/Amazon Linux: anchors in /etc/pki/ca-trust/source/anchors, `update-ca-trust extract`.
pub const RHEL_ANCHOR_DIR: &str = "/etc/pki/ca-trust/source/anchors";
pub const ANCHOR_NAME: &str = "iron-agent.crt";

/// The unit shipped in systemd/ (embedded so the binary installs itself without the source tree).
pub const UNIT_TEMPLATE: &str = include_str!("../../../systemd/iron-agent.service");

#[derive(Debug, Clone)]
pub struct Layout {
    /// `None`: the real system. `Some(dir)`: everything below `dir`, and no commands that would
    /// change the host (trust-store refresh, systemctl, eBPF detach).
    pub root: Option<PathBuf>,
}

impl Layout {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self { root }
    }

    /// The real location of a system path.
    pub fn path(&self, system: impl AsRef<Path>) -> PathBuf {
        let system = system.as_ref();
        match &self.root {
            None => system.to_path_buf(),
            Some(r) => r.join(system.strip_prefix("/").unwrap_or(system)),
        }
    }

    pub fn is_real(&self) -> bool {
        self.root.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let l = Layout::new(Some("/tmp/x".into()));
        assert_eq!(
            l.path(CONFIG),
            PathBuf::from("/tmp/x/etc/iron-agent/config.yaml")
        );
        assert_eq!(Layout::new(None).path(CONFIG), PathBuf::from(CONFIG));
    }
}
