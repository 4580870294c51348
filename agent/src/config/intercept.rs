//! `intercept:` (iron-agent extension): transparent interception with eBPF cgroup hooks, the
//! identities it governs, and per-identity policies.
//!
//! ```yaml
//! intercept:
//!   mode: ebpf              # or none (default): DNS/proxy-settings mode only
//!   default: redirect       # uids not listed below (except root and the agent): redirect | deny | exempt
//!   governed: {users: [ci], uids: [1001], cgroups: [/sys/fs/cgroup/unified/jobs]}
//!   exempt: {users: [backup]}
//!   deny: {uids: [1002]}    # no network at all
//!   loopback: allow         # or deny
//!   require_lsm: false      # true: refuse to start without the BPF LSM
//!   inbound_ports: []       # ports governed tasks may bind on non-loopback addresses
//!   unix_allow: [/run/dbus/system_bus_socket]   # absent: built-in list
//!   self_protect: true
//!   policies:
//!     - users: [alice]
//!       transforms: [...]   # alice's own pipeline; everyone else gets the top-level one
//!       budget: {requests_per_minute: 60}   # optional: 429 past it
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::transforms::TransformEntry;
use super::{ConfigError, ListenAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptMode {
    #[default]
    None,
    Ebpf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    #[default]
    Redirect,
    Deny,
    Exempt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopbackMode {
    #[default]
    Allow,
    Deny,
}

/// A set of identities: uids, user names (resolved at startup) and cgroup v2 directories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identities {
    pub uids: Vec<u32>,
    pub users: Vec<String>,
    pub cgroups: Vec<PathBuf>,
}

impl Identities {
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.users.is_empty() && self.cgroups.is_empty()
    }
}

/// Where each redirected port goes. Defaults: the proxy's own HTTP/HTTPS listeners and the DNS
/// listener (an unspecified bind address is reached on loopback).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectListeners {
    pub http: Option<ListenAddr>,
    pub https: Option<ListenAddr>,
    pub dns: Option<ListenAddr>,
}

/// One per-identity policy: its own transform pipeline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Shown in audit records as `policy`.
    pub name: Option<String>,
    pub uids: Vec<u32>,
    pub users: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub transforms: Vec<TransformEntry>,
    /// Rate budgets for everyone this policy judges together; absent: unlimited.
    pub budget: Option<BudgetConfig>,
}

/// `intercept.policies[i].budget`: each limit is optional; past one the agent answers 429.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    pub requests_per_minute: Option<u64>,
    /// Request-body bytes sent upstream.
    pub bytes_out_per_hour: Option<u64>,
    /// Distinct hosts first requested within the hour.
    pub new_hosts_per_hour: Option<u64>,
}

impl PolicyConfig {
    pub fn identities(&self) -> Identities {
        Identities {
            uids: self.uids.clone(),
            users: self.users.clone(),
            cgroups: self.cgroups.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptConfig {
    pub mode: InterceptMode,
    pub default: IdentityMode,
    pub governed: Identities,
    pub exempt: Identities,
    pub deny: Identities,
    pub listeners: RedirectListeners,
    pub loopback: LoopbackMode,
    pub pin_dir: PathBuf,
    pub policies: Vec<PolicyConfig>,
    /// Refuse to start when the BPF LSM is not active (the LSM-based protections would be off).
    pub require_lsm: bool,
    /// Ports governed tasks may bind on non-loopback addresses (default none: loopback only).
    pub inbound_ports: Vec<u16>,
    /// Unix sockets governed tasks may connect or send to (`@name` for abstract ones); absent =
    /// the built-in list (syslog and the journal; no resolver, no D-Bus, no container runtime).
    pub unix_allow: Option<Vec<String>>,
    /// Governed tasks cannot ptrace the agent, read its /proc memory or call bpf().
    pub self_protect: bool,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            mode: InterceptMode::None,
            default: IdentityMode::Redirect,
            governed: Identities::default(),
            exempt: Identities::default(),
            deny: Identities::default(),
            listeners: RedirectListeners::default(),
            loopback: LoopbackMode::Allow,
            pin_dir: PathBuf::from("/sys/fs/bpf/iron-agent"),
            policies: Vec::new(),
            require_lsm: false,
            inbound_ports: Vec::new(),
            unix_allow: None,
            self_protect: true,
        }
    }
}

impl InterceptConfig {
    pub fn enabled(&self) -> bool {
        self.mode == InterceptMode::Ebpf
    }

    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        for (i, p) in self.policies.iter().enumerate() {
            let base = format!("intercept.policies[{i}]");
            if p.uids.is_empty() && p.users.is_empty() && p.cgroups.is_empty() {
                errors.push(ConfigError::new(
                    base.clone(),
                    "names no uids, users or cgroups",
                ));
            }
            for (j, t) in p.transforms.iter().enumerate() {
                t.validate(&format!("{base}.transforms[{j}]"), errors);
            }
            if let Some(b) = &p.budget {
                for (field, v) in [
                    ("requests_per_minute", b.requests_per_minute),
                    ("bytes_out_per_hour", b.bytes_out_per_hour),
                    ("new_hosts_per_hour", b.new_hosts_per_hour),
                ] {
                    if v == Some(0) {
                        errors.push(ConfigError::new(
                            format!("{base}.budget.{field}"),
                            "must be at least 1 (leave it out for no limit)",
                        ));
                    }
                }
                if b == &BudgetConfig::default() {
                    errors.push(ConfigError::new(
                        format!("{base}.budget"),
                        "sets no limit (requests_per_minute, bytes_out_per_hour, new_hosts_per_hour)",
                    ));
                }
            }
        }
        if self.policies.len() > 1000 {
            errors.push(ConfigError::new(
                "intercept.policies",
                "at most 1000 policies",
            ));
        }
        if !self.enabled() && (!self.policies.is_empty() || !self.governed.is_empty()) {
            errors.push(ConfigError::new(
                "intercept.mode",
                "must be ebpf when policies or governed identities are set",
            ));
        }
        for (i, a) in self.unix_allow.iter().flatten().enumerate() {
            if let Err(reason) = crate::ebpf::harden::unix_key(a) {
                errors.push(ConfigError::new(
                    format!("intercept.unix_allow[{i}]"),
                    reason,
                ));
            }
        }
        for (i, p) in self.inbound_ports.iter().enumerate() {
            if *p == 0 {
                errors.push(ConfigError::new(
                    format!("intercept.inbound_ports[{i}]"),
                    "must be a port number 1-65535",
                ));
            }
        }
        for (name, set) in [
            ("governed", &self.governed),
            ("exempt", &self.exempt),
            ("deny", &self.deny),
        ] {
            for (i, c) in set.cgroups.iter().enumerate() {
                if !c.is_absolute() {
                    errors.push(ConfigError::new(
                        format!("intercept.{name}.cgroups[{i}]"),
                        "must be an absolute path",
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, parse};

    const PRELUDE: &str = "dns:\n  proxy_ip: 10.0.0.2\ntls:\n  mode: sni-only\n";

    #[test]
    fn hardening_fields_parse_and_bad_values_name_their_field() {
        let ok = format!(
            "{PRELUDE}intercept:\n  mode: ebpf\n  require_lsm: true\n  inbound_ports: [8080]\n  \
             unix_allow: [/run/dbus/system_bus_socket, \"@abs\"]\n  self_protect: false\n"
        );
        let c = parse(&ok).unwrap().intercept;
        assert!(c.require_lsm && !c.self_protect);
        assert_eq!(c.inbound_ports, vec![8080]);
        assert_eq!(c.unix_allow.unwrap().len(), 2);
        // A resolver on the list is allowed, with a warning naming the DNS channel.
        let w = crate::config::validate_warnings(&load_str(&ok, &|_| None).unwrap());
        assert!(
            w.iter().any(|w| w.starts_with("intercept.unix_allow[0]")
                && w.contains("systemd-resolved over D-Bus")),
            "{w:?}"
        );

        let bad = format!(
            "{PRELUDE}intercept:\n  mode: ebpf\n  inbound_ports: [0]\n  unix_allow: [docker.sock]\n"
        );
        let errs = load_str(&bad, &|_| None).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("intercept.unix_allow[0]") && e.contains("absolute")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("intercept.inbound_ports[0]")),
            "{text:?}"
        );
        let unknown = format!("{PRELUDE}intercept:\n  mode: ebpf\n  require_lsmm: true\n");
        assert!(parse(&unknown).is_err());
    }

    #[test]
    fn budgets_parse_and_bad_values_name_their_field() {
        let ok = format!(
            "{PRELUDE}intercept:\n  mode: ebpf\n  policies:\n    - uids: [1001]\n      budget: {{requests_per_minute: 2, new_hosts_per_hour: 5}}\n"
        );
        let b = parse(&ok).unwrap().intercept.policies[0].budget.unwrap();
        assert_eq!(b.requests_per_minute, Some(2));
        assert_eq!(b.bytes_out_per_hour, None);
        let bad = format!(
            "{PRELUDE}intercept:\n  mode: ebpf\n  policies:\n    - uids: [1001]\n      budget: {{bytes_out_per_hour: 0}}\n"
        );
        let errs = load_str(&bad, &|_| None).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("intercept.policies[0].budget.bytes_out_per_hour")),
            "{text:?}"
        );
        let typo = format!(
            "{PRELUDE}intercept:\n  mode: ebpf\n  policies:\n    - uids: [1001]\n      budget: {{requests_per_min: 2}}\n"
        );
        let err = load_str(&typo, &|_| None).unwrap_err().to_string();
        assert!(err.contains("requests_per_min"), "{err}");
    }
}
