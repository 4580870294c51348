//! Identity-bound secrets (`secrets[].identities`): which callers may use a secret. Judged on
//! the kernel's record of the connecting task (eBPF mode); outside eBPF mode no caller is known,
//! so nobody matches and a bound secret is never used.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::transforms::secrets::SecretIdentities;
use crate::identify::{Caller, CgroupId};

/// How deep a configured cgroup's subtree is searched for the caller's cgroup (as in the
/// kernel programs).
const MAX_DEPTH: usize = 16;
/// Cgroup ids remembered per gate; past this the memory is cleared and rebuilt on demand.
const MAX_REMEMBERED: usize = 4096;

/// The compiled `identities` of one secret entry.
#[derive(Debug, Clone)]
pub struct IdentityGate {
    uids: Vec<u32>,
    users: Vec<String>,
    cgroups: Vec<PathBuf>,
    policies: Vec<String>,
    /// Whether a cgroup id lies in a configured subtree. A cgroup never moves and ids are not
    /// reused while it exists, so either answer stays right: the directory walk runs once per
    /// cgroup, not on every request.
    seen: Arc<Mutex<HashMap<CgroupId, bool>>>,
}

impl IdentityGate {
    pub fn new(cfg: &SecretIdentities) -> Self {
        Self {
            uids: cfg.uids.clone(),
            users: cfg.users.clone(),
            cgroups: cfg.cgroups.clone(),
            policies: cfg.policies.clone(),
            seen: Arc::default(),
        }
    }

    fn in_configured_cgroup(&self, cg: CgroupId) -> bool {
        if let Ok(seen) = self.seen.lock()
            && let Some(known) = seen.get(&cg)
        {
            return *known;
        }
        let found = self.cgroups.iter().any(|root| in_subtree(root, cg, 0));
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            seen.insert(cg, found);
        }
        found
    }

    /// Whether `caller` is one of the named identities.
    pub fn admits(&self, caller: &Caller) -> bool {
        if let Some(uid) = caller.uid
            && self.uids.contains(&uid.0)
        {
            return true;
        }
        if let Some(user) = &caller.user
            && self.users.iter().any(|u| u == user)
        {
            return true;
        }
        if let Some(p) = &caller.policy
            && self.policies.iter().any(|n| n == p)
        {
            return true;
        }
        match caller.cgroup {
            Some(cg) if !self.cgroups.is_empty() => self.in_configured_cgroup(cg),
            Some(_) => false,
            None => false,
        }
    }
}

/// Whether the cgroup with id `cg` (its directory's inode number) is `dir` or below it.
fn in_subtree(dir: &Path, cg: CgroupId, depth: usize) -> bool {
    let Ok(md) = std::fs::metadata(dir) else {
        return false;
    };
    if md.ino() == cg.0 {
        return true;
    }
    if depth >= MAX_DEPTH {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .any(|e| in_subtree(&e.path(), cg, depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::Uid;

    #[test]
    fn any_named_identity_admits_and_nobody_else() {
        let root = std::env::temp_dir().join(format!("ia-gate-{}", std::process::id()));
        let below = root.join("a").join("b");
        std::fs::create_dir_all(&below).unwrap();
        let gate = IdentityGate::new(&SecretIdentities {
            uids: vec![1001],
            users: vec!["ci".into()],
            policies: vec!["deploy".into()],
            cgroups: vec![root.clone()],
        });
        let caller = |uid, user: Option<&str>, policy: Option<&str>| Caller {
            uid: Some(Uid(uid)),
            user: user.map(str::to_string),
            cgroup: None,
            policy: policy.map(str::to_string),
        };
        assert!(gate.admits(&caller(1001, None, None)));
        assert!(gate.admits(&caller(5, Some("ci"), None)));
        assert!(gate.admits(&caller(5, None, Some("deploy"))));
        assert!(!gate.admits(&caller(5, Some("other"), Some("x"))));
        assert!(
            !gate.admits(&Caller::default()),
            "outside eBPF mode nobody matches"
        );
        // A directory below a configured one matches by inode, as a cgroup id would.
        let ino = std::fs::metadata(&below).unwrap().ino();
        let c = Caller {
            cgroup: Some(CgroupId(ino)),
            ..Caller::default()
        };
        assert!(gate.admits(&c));
        let outside = std::fs::metadata("/").unwrap().ino();
        let c = Caller {
            cgroup: Some(CgroupId(outside)),
            ..Caller::default()
        };
        assert!(!gate.admits(&c));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
