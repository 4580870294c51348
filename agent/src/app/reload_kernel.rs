//! The eBPF side of a reload: every configured identity's kernel policy entry rewritten, then
//! the entries no longer configured removed, so a moved uid is judged by its new policy from
//! its next connection and a dropped one stops being governed by a stale entry.

use std::collections::HashSet;

use crate::config::Config;
use crate::config::intercept::InterceptConfig;
use crate::ebpf::{Interceptor, Mode};
use crate::identify::PolicyId;

use super::intercept::{self, SetupError};

/// Refuses a config naming a user this host does not have, or a cgroup path that is not a
/// cgroup v2 directory, before anything is written (the kernel maps are then never half
/// updated by a reload that fails on its third identity). The startup preflight's checks.
pub fn check_identities(cfg: &Config) -> Result<(), String> {
    let errors = super::preflight::intercept_identities(cfg);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Writes every identity of `cfg` (same order as at startup: later entries win), then removes
/// the stale ones. Written first, pruned after: no identity is ever briefly ungoverned.
pub fn apply(icpt: &Interceptor, cfg: &InterceptConfig) -> Result<(), SetupError> {
    let mut uids = HashSet::new();
    let mut cgroups = HashSet::new();
    let mut keep = |a: intercept::Applied| {
        uids.extend(a.uids);
        cgroups.extend(a.cgroups);
    };
    let top = PolicyId::DEFAULT;
    keep(intercept::apply(
        icpt,
        "governed",
        &cfg.governed,
        Mode::Redirect,
        top,
    )?);
    keep(intercept::apply(
        icpt,
        "exempt",
        &cfg.exempt,
        Mode::Exempt,
        top,
    )?);
    keep(intercept::apply(
        icpt,
        "deny",
        &cfg.deny,
        Mode::DenyAll,
        top,
    )?);
    for (i, p) in cfg.policies.iter().enumerate() {
        let field = format!("policies[{i}]");
        let id = PolicyId::of_index(i);
        keep(intercept::apply(
            icpt,
            &field,
            &p.identities(),
            Mode::Redirect,
            id,
        )?);
    }
    icpt.retain_policies(&uids, &cgroups)?;
    Ok(())
}
