//! Who is governed: the task's cgroup ancestry and uid against the policy maps.

use agent_common::{ListenerConfig, MAX_CGROUP_DEPTH, Policy, mode};
use aya_ebpf::helpers::{bpf_get_current_uid_gid, generated::bpf_get_current_ancestor_cgroup_id};

use crate::maps::{IRON_GOVERNED_CGROUPS, IRON_UID_POLICY};

/// Decides whether the current task is governed and by which policy. `None` = exempt.
///
/// Order: a governed cgroup subtree wins over the uid (setuid or root inside a governed cgroup
/// stays governed); then the uid map; then uid 0 and the agent's own uid are exempt; everything
/// else gets the configured default mode.
#[inline(always)]
pub(crate) fn classify(cfg: &ListenerConfig) -> Option<(Policy, u32)> {
    let uid = bpf_get_current_uid_gid() as u32;
    // Level 0 is the root cgroup: walking down, the last listed ancestor is the innermost.
    let mut innermost: Option<Policy> = None;
    let mut level: u32 = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: plain helper call without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out immediately; `Policy` is plain data.
        if let Some(p) = unsafe { IRON_GOVERNED_CGROUPS.get(&id) } {
            innermost = Some(*p);
        }
        level += 1;
    }
    let p = decide(cfg, innermost, uid)?;
    governed(p, uid)
}

/// Identity precedence (docs/identities.md), shared with the packet backstop: the innermost
/// listed cgroup decides, whatever the uid, except that an `exempt` cgroup does not exempt a
/// uid listed with another mode (a governed user's work that lands in an exempt cgroup, such as
/// a cron job in `cron.service`, stays governed); then the uid's entry; then root and the
/// agent are exempt; then `default`. `None`: exempt.
#[inline(always)]
pub(crate) fn decide(cfg: &ListenerConfig, cgroup: Option<Policy>, uid: u32) -> Option<Policy> {
    // SAFETY: the value is copied out immediately; `Policy` is plain data.
    let by_uid = unsafe { IRON_UID_POLICY.get(&uid) }.copied();
    if let Some(c) = cgroup {
        if c.mode != mode::EXEMPT {
            return Some(c);
        }
        return match by_uid {
            Some(u) if u.mode != mode::EXEMPT => Some(u),
            _ => None,
        };
    }
    if let Some(u) = by_uid {
        return (u.mode != mode::EXEMPT).then_some(u);
    }
    if uid == 0 || uid == cfg.agent_uid {
        return None;
    }
    Some(Policy {
        mode: cfg.default_mode,
        policy_id: cfg.default_policy_id,
    })
}

#[inline(always)]
pub(crate) fn governed(p: Policy, uid: u32) -> Option<(Policy, u32)> {
    if p.mode == mode::EXEMPT {
        None
    } else {
        Some((p, uid))
    }
}
