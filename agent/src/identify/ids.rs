//! Identities on the data path as types of their own, so a uid cannot be passed where a policy
//! id is expected (both are `u32` to the kernel).

use std::fmt;

/// A Linux user id: who opened a governed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(pub u32);

/// Which identity profile judges a connection: `0` is the top-level `transforms` list,
/// `i + 1` is `intercept.policies[i]`. The kernel stores it with each uid and cgroup rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PolicyId(pub u32);

/// A cgroup v2 id (the cgroup directory's inode number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupId(pub u64);

impl PolicyId {
    /// The top-level pipeline.
    pub const DEFAULT: PolicyId = PolicyId(0);

    /// The id of `intercept.policies[index]`.
    pub fn of_index(index: usize) -> PolicyId {
        PolicyId(u32::try_from(index + 1).unwrap_or(u32::MAX))
    }

    /// The `intercept.policies` index this id names (`None` for the default).
    pub fn index(self) -> Option<usize> {
        self.0.checked_sub(1).map(|i| i as usize)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for CgroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_ids_map_to_policy_indexes() {
        assert_eq!(PolicyId::DEFAULT.index(), None);
        assert_eq!(PolicyId::of_index(0), PolicyId(1));
        assert_eq!(PolicyId(3).index(), Some(2));
    }
}
