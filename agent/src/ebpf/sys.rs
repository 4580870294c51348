//! Host plumbing: mount table, bpffs, cgroup ids, address encoding.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::InterceptError;

/// Where bpffs is conventionally mounted; mounted by [`ensure_bpffs`] if absent.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fstype: String,
}

/// `/proc/self/mountinfo`, in mount order.
fn mounts() -> Result<Vec<MountEntry>, InterceptError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| InterceptError::io("reading /proc/self/mountinfo", e))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `id parent maj:min root mount_point options [optional...] - fstype source superopts`
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (pre, post) = line.split_once(" - ")?;
    let mut pre = pre.split(' ');
    let root = unescape(pre.nth(3)?);
    let mount_point = PathBuf::from(unescape(pre.next()?));
    let fstype = post.split(' ').next()?.to_owned();
    Some(MountEntry {
        root,
        mount_point,
        fstype,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount point. Pure v2 hosts have it at /sys/fs/cgroup, hybrid ones (like the
/// development machines) at /sys/fs/cgroup/unified. A mount of the hierarchy's root is preferred
/// over bind mounts of a sub-tree (containers).
pub fn cgroup2_mount() -> Result<PathBuf, InterceptError> {
    let all = mounts()?;
    let v2: Vec<&MountEntry> = all.iter().filter(|m| m.fstype == "cgroup2").collect();
    v2.iter()
        .find(|m| m.root == "/")
        .or_else(|| v2.first())
        .map(|m| m.mount_point.clone())
        .ok_or(InterceptError::NoCgroup2)
}

/// Filesystem type of the mount containing `path` (longest mount-point prefix; later mounts win).
fn fstype_of(path: &Path, all: &[MountEntry]) -> Option<String> {
    let mut best: Option<&MountEntry> = None;
    for m in all {
        if path.starts_with(&m.mount_point)
            && best
                .is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    best.map(|m| m.fstype.clone())
}

/// Makes sure `pin_dir` lies on a bpffs, mounting one at [`BPFFS_MOUNT`] when the pin dir is below
/// it and nothing is mounted there yet (Debian does not mount it by default).
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), InterceptError> {
    let bpffs = |reason: String| InterceptError::Bpffs {
        path: pin_dir.to_path_buf(),
        reason,
    };
    if fstype_of(pin_dir, &mounts()?).as_deref() == Some("bpf") {
        return Ok(());
    }
    if !pin_dir.starts_with(BPFFS_MOUNT) {
        return Err(bpffs(format!(
            "not below {BPFFS_MOUNT} and not on a bpf mount"
        )));
    }
    fs::create_dir_all(BPFFS_MOUNT).map_err(|e| bpffs(format!("creating {BPFFS_MOUNT}: {e}")))?;
    crate::sys::mount_bpffs(Path::new(BPFFS_MOUNT))
        .map_err(|e| bpffs(format!("mount -t bpf bpf {BPFFS_MOUNT}: {e}")))?;
    if fstype_of(pin_dir, &mounts()?).as_deref() == Some("bpf") {
        Ok(())
    } else {
        Err(bpffs("still not on bpffs after mounting".into()))
    }
}

/// cgroup v2 id of a cgroup directory: the kernfs inode number, which is what
/// `bpf_get_current_cgroup_id` / `bpf_get_current_ancestor_cgroup_id` return.
pub fn cgroup_id(path: &Path) -> Result<u64, InterceptError> {
    let md = fs::metadata(path)
        .map_err(|e| InterceptError::io(format!("stat {}", path.display()), e))?;
    if !md.is_dir() || !path.join("cgroup.procs").exists() {
        return Err(InterceptError::Config(format!(
            "{} is not a cgroup v2 directory",
            path.display()
        )));
    }
    Ok(md.ino())
}

/// 16 address bytes as the four network-order words of `in6_addr` (the map ABI).
pub(crate) fn words(o: [u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// Inverse of [`words`].
pub(crate) fn bytes(w: [u32; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing() {
        let l = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.root, "/");
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m.fstype, "cgroup2");
        let l = r"36 25 0:31 /a\040b /mnt/x\040y rw - ext4 /dev/sda rw";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.root, "/a b");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/x y"));
    }

    #[test]
    fn word_roundtrip() {
        let o: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(bytes(words(o)), o);
    }

    #[test]
    fn longest_prefix_wins() {
        let all = vec![
            MountEntry {
                root: "/".into(),
                mount_point: "/".into(),
                fstype: "ext4".into(),
            },
            MountEntry {
                root: "/".into(),
                mount_point: "/sys".into(),
                fstype: "sysfs".into(),
            },
            MountEntry {
                root: "/".into(),
                mount_point: "/sys/fs/bpf".into(),
                fstype: "bpf".into(),
            },
        ];
        assert_eq!(
            fstype_of(Path::new("/sys/fs/bpf/iron-agent"), &all).as_deref(),
            Some("bpf")
        );
        assert_eq!(
            fstype_of(Path::new("/sys/fs/bpfx"), &all).as_deref(),
            Some("sysfs")
        );
    }
}
