//! What the `file_open` LSM program keeps governed tasks from opening (issue 11 item 12): the
//! CA key, the agent's state directory, and the CA's directory when it is dedicated to the
//! agent. Paths are turned into the `(superblock dev, inode number)` keys the program compares
//! when the map is written, so a rename or a symlink does not change what is protected, and a
//! hard link to a protected file is the same inode.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agent_common::harden::{InodeKey, PROTECTED_ENTRIES, protect};

/// How a path is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protect {
    /// The file itself (every hard link to it included).
    File,
    /// The directory, everything directly in it (later files too: the program checks the
    /// opened file's parent), and what is in its subdirectories when the map is written.
    Dir,
    /// Readable even inside a protected directory: the CA certificate clients must trust.
    Public,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedPath {
    pub path: PathBuf,
    pub kind: Protect,
    /// What it is, for the startup log ("CA key", "state directory").
    pub what: &'static str,
}

/// How deep below a protected directory existing subdirectories are marked as directories.
const MAX_DEPTH: usize = 4;

/// The directory name that marks a directory as dedicated to the agent: every layout `install`,
/// `init` and the default config create (`/etc/iron-agent`, `/var/lib/iron-agent`,
/// `~/.local/state/iron-agent`) ends in it. A directory named otherwise may be shared (`/tmp`,
/// a home directory, `/etc/ssl/private`) and is never protected as a whole.
pub const DEDICATED_DIR_NAME: &str = "iron-agent";

/// Whether `dir` is dedicated to the agent (see [`DEDICATED_DIR_NAME`]).
pub fn is_dedicated(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == DEDICATED_DIR_NAME)
}

/// The kernel's `dev_t` encoding (`MAJOR << 20 | MINOR`, what `super_block.s_dev` holds) of a
/// userspace `st_dev` (glibc's encoding, which differs).
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (nix::sys::stat::major(st_dev), nix::sys::stat::minor(st_dev));
    ((major << 20) | (minor & 0xf_ffff)) as u32
}

fn key_of(md: &std::fs::Metadata) -> InodeKey {
    InodeKey {
        ino: md.ino(),
        dev: kernel_dev(md.dev()),
        _pad: 0,
    }
}

/// The map entries for a set of protected paths.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub entries: HashMap<InodeKey, u8>,
    /// Paths that could not be protected, with why (a missing state directory, for instance).
    pub skipped: Vec<String>,
    /// Existing files below a protected directory left out because the map is full (files
    /// directly in a protected directory stay covered through their parent).
    pub truncated: usize,
}

/// Resolves `paths` into at most `capacity` entries; the first entry for an inode stands. The
/// named files first (a CA certificate that is also the key file stays protected), then the
/// public ones (they win inside a protected directory), then the named directories, then what
/// the directories hold, breadth first. Symlinks are never followed below a directory: a link to
/// `/etc/passwd` in the state directory must not protect `/etc/passwd`.
pub fn resolve(paths: &[ProtectedPath], capacity: usize) -> Resolved {
    let mut out = Resolved::default();
    let mut dirs = VecDeque::new();
    let order = [Protect::File, Protect::Public, Protect::Dir];
    for kind in order {
        for p in paths.iter().filter(|p| p.kind == kind) {
            let md = match std::fs::metadata(&p.path) {
                Ok(md) => md,
                Err(e) => {
                    out.skipped
                        .push(format!("{} {}: {e}", p.what, p.path.display()));
                    continue;
                }
            };
            let value = match kind {
                Protect::Public => protect::PUBLIC,
                Protect::File => protect::FILE,
                Protect::Dir if md.is_dir() => {
                    dirs.push_back((p.path.clone(), 0));
                    protect::DIR
                }
                Protect::Dir => protect::FILE,
            };
            insert(&mut out, key_of(&md), value, capacity);
        }
    }
    while let Some((dir, depth)) = dirs.pop_front() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(md) = entry.path().symlink_metadata() else {
                continue;
            };
            if md.file_type().is_symlink() {
                continue;
            }
            let value = if md.is_dir() && depth + 1 < MAX_DEPTH {
                dirs.push_back((entry.path(), depth + 1));
                protect::DIR
            } else {
                protect::FILE
            };
            insert(&mut out, key_of(&md), value, capacity);
        }
    }
    out
}

/// Adds an entry unless its inode already has one (the earlier, stronger kind stays).
fn insert(out: &mut Resolved, key: InodeKey, value: u8, capacity: usize) {
    if out.entries.contains_key(&key) {
        return;
    }
    if out.entries.len() >= capacity {
        out.truncated += 1;
        return;
    }
    out.entries.insert(key, value);
}

/// How many inodes the installation pinned under `pin_dir` protects from governed opens.
pub fn pinned_count(pin_dir: &Path) -> Result<usize, super::InterceptError> {
    use agent_common::{PIN_MAPS_SUBDIR, harden::MAP_PROTECTED};
    use aya::maps::{HashMap as BpfHashMap, Map, MapData};
    let err = |e| super::InterceptError::map(MAP_PROTECTED, e);
    let data = MapData::from_pin(pin_dir.join(PIN_MAPS_SUBDIR).join(MAP_PROTECTED)).map_err(err)?;
    let map: BpfHashMap<MapData, InodeKey, u8> =
        BpfHashMap::try_from(Map::from_map_data(data).map_err(err)?).map_err(err)?;
    Ok(map.keys().filter(Result::is_ok).count())
}

/// [`resolve`] with the map's capacity.
pub fn resolve_all(paths: &[ProtectedPath]) -> Resolved {
    resolve(paths, PROTECTED_ENTRIES as usize)
}

/// A directory for a unit test, removed when dropped.
#[cfg(test)]
pub(crate) struct Scratch(PathBuf);

#[cfg(test)]
impl Scratch {
    pub(crate) fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ia-protect-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        if let Err(e) = std::fs::create_dir_all(&p) {
            panic!("creating {}: {e}", p.display());
        }
        Self(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &Path, kind: Protect) -> ProtectedPath {
        ProtectedPath {
            path: path.to_path_buf(),
            kind,
            what: "test",
        }
    }

    #[test]
    fn kernel_dev_uses_the_kernel_encoding() {
        // 8:1 (sda1) is 0x801 for glibc and 8 << 20 | 1 for the kernel.
        assert_eq!(kernel_dev(nix::sys::stat::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(0, 45)), 45);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(259, 3)), (259 << 20) | 3);
    }

    #[test]
    fn directories_cover_what_they_hold_and_public_files_win() {
        let t = Scratch::new("dirs");
        let state = t.path().join("iron-agent");
        std::fs::create_dir_all(state.join("sub/deeper")).unwrap();
        for f in ["ca.key", "ca.crt", "sub/token", "sub/deeper/x"] {
            std::fs::write(state.join(f), "x").unwrap();
        }
        let outside = t.path().join("passwd");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, state.join("link")).unwrap();
        let r = resolve(
            &[
                p(&state, Protect::Dir),
                p(&state.join("ca.crt"), Protect::Public),
                p(&t.path().join("missing"), Protect::File),
            ],
            64,
        );
        let val = |path: &Path| {
            let md = std::fs::symlink_metadata(path).unwrap();
            r.entries.get(&key_of(&md)).copied()
        };
        assert_eq!(val(&state), Some(protect::DIR));
        assert_eq!(val(&state.join("sub")), Some(protect::DIR));
        assert_eq!(val(&state.join("sub/deeper")), Some(protect::DIR));
        assert_eq!(val(&state.join("ca.key")), Some(protect::FILE));
        assert_eq!(val(&state.join("sub/deeper/x")), Some(protect::FILE));
        assert_eq!(val(&state.join("ca.crt")), Some(protect::PUBLIC));
        assert_eq!(val(&outside), None, "a symlink's target is not protected");
        assert_eq!(r.entries.len(), 7);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].contains("missing"), "{:?}", r.skipped);
        assert_eq!(r.truncated, 0);

        // A full map keeps the named paths and counts what it left out.
        let r = resolve(&[p(&state, Protect::Dir)], 2);
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.truncated, 5);
    }

    #[test]
    fn a_certificate_file_that_is_also_the_key_stays_protected() {
        let t = Scratch::new("pem");
        let pem = t.path().join("ca.pem");
        std::fs::write(&pem, "x").unwrap();
        let r = resolve(&[p(&pem, Protect::Public), p(&pem, Protect::File)], 8);
        let md = std::fs::metadata(&pem).unwrap();
        assert_eq!(r.entries.get(&key_of(&md)), Some(&protect::FILE));
    }

    #[test]
    fn only_directories_named_iron_agent_are_dedicated() {
        assert!(is_dedicated(Path::new("/etc/iron-agent")));
        assert!(is_dedicated(Path::new("/home/u/.local/state/iron-agent")));
        assert!(!is_dedicated(Path::new("/tmp")));
        assert!(!is_dedicated(Path::new("/etc/ssl/private")));
        assert!(!is_dedicated(Path::new("/")));
    }
}
