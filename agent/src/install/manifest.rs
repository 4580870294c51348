//! The install manifest: every path `install` created, in creation order, so `uninstall` removes
//! exactly those and nothing that was there before.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::InstallError;
use super::layout::{Layout, MANIFEST};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// System path (without any `--root` prefix).
    pub path: PathBuf,
    pub kind: Kind,
    /// Kept by `uninstall` unless `--purge` (the CA: workloads may still trust it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustStore {
    Debian,
    Rhel,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub created: Vec<Entry>,
    /// Which trust store holds our anchor (its file is also in `created`).
    #[serde(default)]
    pub trust_store: Option<TrustStore>,
    /// Whether the unit was enabled through systemctl.
    #[serde(default)]
    pub unit_enabled: bool,
}

impl Manifest {
    pub fn load(layout: &Layout) -> Result<Option<Self>, InstallError> {
        let path = layout.path(MANIFEST);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| InstallError::Manifest {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstallError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Writes the manifest (0600: it is only for root). Its directory must exist.
    pub fn save(&self, layout: &Layout) -> Result<(), InstallError> {
        let path = layout.path(MANIFEST);
        let text = serde_json::to_string_pretty(self).map_err(|e| InstallError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_file(&path, text.as_bytes(), 0o600)
    }

    pub fn remove_file(layout: &Layout) -> Result<(), InstallError> {
        let path = layout.path(MANIFEST);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(InstallError::io(format!("removing {}", path.display()), e)),
        }
    }

    pub fn created(&self, path: &Path) -> bool {
        self.created.iter().any(|e| e.path == path)
    }

    pub fn record(&mut self, path: &Path, kind: Kind, keep: bool) {
        if !self.created(path) {
            self.created.push(Entry {
                path: path.to_path_buf(),
                kind,
                keep,
            });
        }
    }

    /// Creates `dir` and its missing ancestors (0755), recording each one created.
    pub fn mkdirs(&mut self, layout: &Layout, dir: &Path) -> Result<(), InstallError> {
        let mut missing = Vec::new();
        for anc in dir.ancestors() {
            if layout.path(anc).is_dir() {
                break;
            }
            missing.push(anc.to_path_buf());
        }
        for d in missing.into_iter().rev() {
            let real = layout.path(&d);
            fs::create_dir(&real)
                .map_err(|e| InstallError::io(format!("creating {}", real.display()), e))?;
            fs::set_permissions(&real, fs::Permissions::from_mode(0o755))
                .map_err(|e| InstallError::io(format!("chmod {}", real.display()), e))?;
            self.record(&d, Kind::Dir, false);
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (or a running
/// binary) never sees a half-written file.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".iron-agent-tmp");
    let tmp = PathBuf::from(tmp);
    let res = (|| {
        fs::write(&tmp, bytes)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        InstallError::io(format!("writing {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdirs_records_only_created() {
        let dir = tempfile_dir();
        let layout = Layout::new(Some(dir.clone()));
        let mut m = Manifest::default();
        m.mkdirs(&layout, Path::new("/a/b/c")).unwrap();
        let paths: Vec<_> = m.created.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("/a"), "/a/b".into(), "/a/b/c".into()]);
        let mut m2 = Manifest::default();
        m2.mkdirs(&layout, Path::new("/a/b/d")).unwrap();
        assert_eq!(m2.created.len(), 1);
        let _ = fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("iron-agent-manifest-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
