//! Warnings about `intercept.exempt.cgroups` entries that would exempt governed users' work.
//!
//! The innermost listed cgroup decides (docs/identities.md), so an exempt cgroup exempts every
//! task below it whose uid has no explicit entry of its own. cron, at, anacron, sshd (without
//! logind) and systemd user services start a user's processes in well-known cgroups; an exempt
//! entry that is, or contains, one of them lets a user governed by `default` escape through a
//! cron job or `ssh localhost`. Uids listed explicitly (`governed`, `deny`, `policies`) stay
//! governed there, so the warning is about uids governed by `default`.

use std::path::{Component, Path};

use super::intercept::{IdentityMode, InterceptConfig};

/// Where governed users' work usually lands, relative to the cgroup v2 root, and what runs there.
const LANDING_PLACES: &[(&str, &str)] = &[
    ("system.slice/cron.service", "cron jobs"),
    ("system.slice/crond.service", "cron jobs"),
    ("system.slice/anacron.service", "anacron jobs"),
    ("system.slice/atd.service", "at jobs"),
    ("system.slice/ssh.service", "ssh sessions without logind"),
    ("system.slice/sshd.service", "ssh sessions without logind"),
    (
        "user.slice",
        "login sessions and systemd user services (systemd-run --user)",
    ),
];

/// Mount points of the cgroup v2 hierarchy in the layouts systemd uses.
const CGROUP_ROOTS: &[&str] = &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

/// The path below the cgroup v2 root (`""` for the root itself), if it is under a known mount.
fn relative(path: &Path) -> Option<String> {
    let rest = CGROUP_ROOTS
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())?;
    let parts: Vec<String> = rest
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    Some(parts.join("/"))
}

/// `inner` is `outer` or below it (path prefix by whole components; `""` is the root).
fn contains(outer: &str, inner: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
}

/// One warning per exempt cgroup that is, contains or lies inside a landing place, when some
/// uid is governed by `default`.
pub fn exempt_cgroup_warnings(icpt: &InterceptConfig) -> Vec<String> {
    if !icpt.enabled() || icpt.default == IdentityMode::Exempt {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, cg) in icpt.exempt.cgroups.iter().enumerate() {
        let Some(rel) = relative(cg) else { continue };
        let hits: Vec<String> = LANDING_PLACES
            .iter()
            .filter(|(place, _)| contains(&rel, place) || contains(place, &rel))
            .map(|(place, what)| format!("{place} ({what})"))
            .collect();
        if hits.is_empty() {
            continue;
        }
        out.push(format!(
            "intercept.exempt.cgroups[{i}]: {} contains places where governed users' work runs: {}; \
             users governed only by `default` would not be governed there (list them under \
             `governed` or `policies`, or exempt a narrower cgroup)",
            cg.display(),
            hits.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn warnings(intercept: &str) -> Vec<String> {
        let yaml = format!(
            "dns: {{proxy_ip: 10.0.0.2}}\ntls: {{mode: sni-only}}\nintercept:\n  mode: ebpf\n{intercept}"
        );
        exempt_cgroup_warnings(&parse(&yaml).unwrap().intercept)
    }

    #[test]
    fn exempt_cgroups_holding_cron_at_or_user_sessions_are_warned_about() {
        let w = warnings("  exempt: {cgroups: [/sys/fs/cgroup/system.slice]}\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("intercept.exempt.cgroups[0]:"), "{w:?}");
        assert!(
            w[0].contains("system.slice/cron.service (cron jobs)"),
            "{w:?}"
        );
        assert!(w[0].contains("system.slice/atd.service (at jobs)"), "{w:?}");
        assert!(!w[0].contains("user.slice"), "{w:?}");

        let w = warnings(
            "  exempt: {cgroups: [/sys/fs/cgroup/backup.slice, /sys/fs/cgroup/unified/system.slice/cron.service]}\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("intercept.exempt.cgroups[1]:"), "{w:?}");

        // Inside a landing place (one user's slice) and the root cgroup count too.
        let w = warnings(
            "  exempt: {cgroups: [/sys/fs/cgroup/user.slice/user-1001.slice, /sys/fs/cgroup]}\n",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("user.slice (login sessions"), "{w:?}");

        // Unrelated cgroups, and `default: exempt` (nobody is governed by default): quiet.
        assert!(
            warnings("  exempt: {cgroups: [/sys/fs/cgroup/system.slice/nginx.service]}\n")
                .is_empty()
        );
        assert!(
            warnings("  default: exempt\n  exempt: {cgroups: [/sys/fs/cgroup/system.slice]}\n")
                .is_empty()
        );
        // Path prefixes are compared by component: `user.slice2` is not `user.slice`.
        assert!(warnings("  exempt: {cgroups: [/sys/fs/cgroup/user.slice2]}\n").is_empty());
    }
}
