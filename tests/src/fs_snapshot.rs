//! Snapshots of directory trees, compared strictly (type, mode, bytes, link targets) or by
//! content, and put back exactly as they were.
//!
//! `update-ca-certificates` (run by `iron-agent install`/`uninstall`) rewrites every local
//! anchor's entry as a symlink to its source in `/usr/local/share/ca-certificates`, including
//! entries a machine image shipped as plain files. The certificates are the same, the bytes of
//! the directory are not. So the install test compares the trust store by content (which
//! certificates each entry holds, wherever it points), and puts the original layout back
//! afterwards, so that the next run starts from the same fresh-machine state.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One directory entry as found, with everything needed to recreate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: SystemTime,
        bytes: Vec<u8>,
    },
    Link {
        target: PathBuf,
    },
}

impl Entry {
    /// Type, mode and content or link target: what a strict tree diff compares.
    pub fn strict(&self) -> String {
        match self {
            Entry::Dir { mode } => format!("dir {mode:o}"),
            Entry::File { mode, bytes, .. } => {
                format!("file {mode:o} {} bytes {:x}", bytes.len(), fnv(bytes))
            }
            Entry::Link { target } => format!("link -> {}", target.display()),
        }
    }
}

/// What one entry holds, wherever it points: its certificates (PEM bodies, sorted, so a bundle
/// in another order is the same bundle), or a digest for anything that is not PEM.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Content {
    Dir,
    Certificates(BTreeSet<String>),
    Other(u64),
    Dangling,
}

/// Every path below `dir` with its type, mode and content digest (or link target): the strict
/// view of [`Snapshot`] without keeping the bytes, for trees with large files.
pub fn strict_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return;
        };
        let rel = p.strip_prefix(base).expect("below base").to_path_buf();
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(p).expect("read link");
            out.insert(rel, format!("link -> {}", target.display()));
        } else if md.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)
                .expect("read dir")
                .flatten()
                .map(|e| e.path())
                .collect();
            children.sort();
            for c in children {
                walk(base, &c, out);
            }
        } else {
            let bytes = std::fs::read(p).unwrap_or_default();
            out.insert(
                rel,
                format!("file {mode:o} {} bytes {:x}", bytes.len(), fnv(&bytes)),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A directory tree below `root`, as found (bytes kept, for [`Snapshot::restore_layout`]: meant
/// for small trees such as a trust store).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub root: PathBuf,
    /// Relative path → entry.
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Relative path → content (symlinks followed when the snapshot was taken).
    pub contents: BTreeMap<PathBuf, Content>,
}

impl Snapshot {
    /// Everything below `root` except paths for which `skip` (relative path) is true.
    pub fn take(root: &Path, skip: impl Fn(&Path) -> bool) -> Snapshot {
        let mut s = Snapshot {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
            contents: BTreeMap::new(),
        };
        s.walk(root, &skip);
        s
    }

    fn walk(&mut self, p: &Path, skip: &dyn Fn(&Path) -> bool) {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return;
        };
        let rel = p
            .strip_prefix(&self.root)
            .expect("below root")
            .to_path_buf();
        if skip(&rel) {
            return;
        }
        let mode = md.permissions().mode() & 0o7777;
        let entry = if md.file_type().is_symlink() {
            Entry::Link {
                target: std::fs::read_link(p).expect("read link"),
            }
        } else if md.is_dir() {
            Entry::Dir { mode }
        } else {
            Entry::File {
                mode,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.modified().expect("mtime"),
                bytes: std::fs::read(p).unwrap_or_default(),
            }
        };
        let content = match &entry {
            Entry::Dir { .. } => Content::Dir,
            Entry::File { bytes, .. } => content_of(bytes),
            Entry::Link { .. } => match std::fs::read(p) {
                Ok(bytes) => content_of(&bytes),
                Err(_) => Content::Dangling,
            },
        };
        let is_dir = matches!(entry, Entry::Dir { .. });
        self.entries.insert(rel.clone(), entry);
        self.contents.insert(rel, content);
        if is_dir {
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)
                .expect("read dir")
                .flatten()
                .map(|e| e.path())
                .collect();
            children.sort();
            for c in children {
                self.walk(&c, skip);
            }
        }
    }

    /// Relative path → [`Entry::strict`].
    pub fn strict(&self) -> BTreeMap<PathBuf, String> {
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), v.strict()))
            .collect()
    }

    /// Puts back, exactly as in `self`, every entry whose layout differs in `now` while its
    /// content is the same (a plain file turned into a symlink to the same certificate, or the
    /// reverse). Entries whose content changed are left alone: those are real differences.
    /// Returns the paths it restored.
    pub fn restore_layout(&self, now: &Snapshot) -> Vec<PathBuf> {
        let mut restored = Vec::new();
        for (rel, entry) in &self.entries {
            // Type, mode, bytes, link target; a rewrite with the same bytes (mtime) is no change.
            let same_layout = now.entries.get(rel).map(Entry::strict) == Some(entry.strict());
            let same_content = now.contents.get(rel) == self.contents.get(rel);
            if same_layout || !same_content || matches!(entry, Entry::Dir { .. }) {
                continue;
            }
            let path = self.root.join(rel);
            recreate(&path, entry).unwrap_or_else(|e| panic!("restoring {}: {e}", path.display()));
            restored.push(rel.clone());
        }
        restored
    }
}

/// Human-readable differences between two maps of the same tree (empty: equal).
pub fn diff<V: PartialEq + std::fmt::Debug>(
    before: &BTreeMap<PathBuf, V>,
    after: &BTreeMap<PathBuf, V>,
) -> Vec<String> {
    let changed = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{}: {v:?} -> {:?}", k.display(), after.get(k)));
    let added = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(|k| format!("new: {}", k.display()));
    changed.chain(added).collect()
}

/// Replaces `path` by `entry` atomically (a sibling temp file or link renamed over it).
fn recreate(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.iron-agent-test-restore"));
    let _ = std::fs::remove_file(&tmp);
    match entry {
        Entry::Dir { .. } => return Ok(()),
        Entry::Link { target } => std::os::unix::fs::symlink(target, &tmp)?,
        Entry::File {
            mode,
            uid,
            gid,
            mtime,
            bytes,
        } => {
            std::fs::write(&tmp, bytes)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))?;
            std::os::unix::fs::chown(&tmp, Some(*uid), Some(*gid))?;
            std::fs::File::options()
                .write(true)
                .open(&tmp)?
                .set_modified(*mtime)?;
        }
    }
    std::fs::rename(&tmp, path)
}

/// The certificates in `bytes` (PEM), or a digest when there are none.
pub fn content_of(bytes: &[u8]) -> Content {
    let text = String::from_utf8_lossy(bytes);
    let mut certs = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        } else if line.starts_with("-----END ") {
            if let Some(body) = current.take() {
                certs.insert(body);
            }
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    if certs.is_empty() {
        Content::Other(fnv(bytes))
    } else {
        Content::Certificates(certs)
    }
}

/// FNV-1a: a stable digest for comparing snapshots (not for security).
pub fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100000001b3)
    })
}

/// Gives a machine the layout a fresh machine image ships: each local anchor
/// (`<anchors>/NAME.crt`) whose entry `<certs>/NAME.pem` is a symlink to it (what an earlier
/// `update-ca-certificates` left) becomes a plain copy of the certificate. Returns the entries
/// it converted. The caller restores the original layout with [`Snapshot::restore_layout`].
pub fn make_local_anchors_plain(certs: &Path, anchors: &Path) -> Vec<PathBuf> {
    let mut converted = Vec::new();
    let Ok(rd) = std::fs::read_dir(anchors) else {
        return converted;
    };
    let mut crts: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt") && p.is_file())
        .collect();
    crts.sort();
    for crt in crts {
        let stem = crt
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        // update-ca-certificates' own naming: spaces and commas become `_`, parentheses `=`.
        let pem_name = stem.replace([' ', ','], "_").replace(['(', ')'], "=") + ".pem";
        let pem = certs.join(pem_name);
        if std::fs::read_link(&pem).ok().as_deref() != Some(crt.as_path()) {
            continue;
        }
        let md = std::fs::metadata(&crt).expect("anchor metadata");
        let entry = Entry::File {
            mode: 0o644,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.modified().expect("mtime"),
            bytes: std::fs::read(&crt).expect("read anchor"),
        };
        recreate(&pem, &entry).unwrap_or_else(|e| panic!("{}: {e}", pem.display()));
        converted.push(pem);
    }
    converted
}
