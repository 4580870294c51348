//! Userspace view of the interception config ([`agent_common::ListenerConfig`]).

use std::{
    net::{SocketAddrV4, SocketAddrV6},
    path::PathBuf,
};

use agent_common::{Endpoint4, Endpoint6, ListenerConfig, PIN_DIR, loopback, mode};

use super::{InterceptError, sys};

/// Interception mode of a uid or governed cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// TCP 80/443 and UDP 53 go to the agent; other non-loopback traffic is denied.
    #[default]
    Redirect,
    /// All non-loopback TCP/UDP is denied.
    DenyAll,
    /// Not governed.
    Exempt,
}

impl Mode {
    pub(crate) const fn raw(self) -> u32 {
        match self {
            Self::Redirect => mode::REDIRECT,
            Self::DenyAll => mode::DENY_ALL,
            Self::Exempt => mode::EXEMPT,
        }
    }

    pub(crate) const fn from_raw(v: u32) -> Option<Self> {
        match v {
            mode::REDIRECT => Some(Self::Redirect),
            mode::DENY_ALL => Some(Self::DenyAll),
            mode::EXEMPT => Some(Self::Exempt),
            _ => None,
        }
    }
}

/// Whether governed tasks may reach loopback (local services and the agent's own ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoopbackPolicy {
    #[default]
    Allow,
    Deny,
}

/// Everything the programs need to know, plus where to pin and attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptConfig {
    /// Agent listeners governed IPv4 traffic (and IPv4-mapped IPv6) is redirected to. `None`
    /// means that traffic is denied instead.
    pub http_v4: Option<SocketAddrV4>,
    pub https_v4: Option<SocketAddrV4>,
    pub dns_v4: Option<SocketAddrV4>,
    /// Agent listeners native IPv6 traffic (including NAT64/6to4 forms) is redirected to. `None`
    /// means that traffic is denied instead.
    pub http_v6: Option<SocketAddrV6>,
    pub https_v6: Option<SocketAddrV6>,
    pub dns_v6: Option<SocketAddrV6>,
    /// The agent's own uid, never governed by uid (its upstream connections must not be
    /// redirected back to itself). Defaults to the current effective uid.
    pub agent_uid: u32,
    /// Mode for uids that are neither listed (`set_uid_policy`) nor in a governed cgroup, other
    /// than 0 and `agent_uid` (which are exempt unless listed).
    pub default_mode: Mode,
    /// Policy id reported for tasks governed by `default_mode`.
    pub default_policy_id: u32,
    pub loopback: LoopbackPolicy,
    /// bpffs directory for the pinned maps and links.
    pub pin_dir: PathBuf,
    /// cgroup v2 directory to attach to; `None` = the root of the cgroup2 mount.
    pub cgroup_root: Option<PathBuf>,
    /// The hardening programs' settings (issue 11).
    pub harden: super::harden::HardenOptions,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            http_v4: None,
            https_v4: None,
            dns_v4: None,
            http_v6: None,
            https_v6: None,
            dns_v6: None,
            agent_uid: crate::sys::euid(),
            default_mode: Mode::Redirect,
            default_policy_id: 0,
            loopback: LoopbackPolicy::Allow,
            pin_dir: PathBuf::from(PIN_DIR),
            cgroup_root: None,
            harden: super::harden::HardenOptions::default(),
        }
    }
}

impl InterceptConfig {
    /// The map value written to `IRON_CONFIG`.
    pub fn to_raw(&self) -> Result<ListenerConfig, InterceptError> {
        fn e4(a: Option<SocketAddrV4>, what: &str) -> Result<Endpoint4, InterceptError> {
            match a {
                None => Ok(Endpoint4::default()),
                Some(a) if a.port() == 0 => {
                    Err(InterceptError::Config(format!("{what} has port 0")))
                }
                Some(a) => Ok(Endpoint4 {
                    addr: u32::from_ne_bytes(a.ip().octets()),
                    port: a.port(),
                    _pad: 0,
                }),
            }
        }
        fn e6(a: Option<SocketAddrV6>, what: &str) -> Result<Endpoint6, InterceptError> {
            match a {
                None => Ok(Endpoint6::default()),
                Some(a) if a.port() == 0 => {
                    Err(InterceptError::Config(format!("{what} has port 0")))
                }
                Some(a) => Ok(Endpoint6 {
                    addr: sys::words(a.ip().octets()),
                    port: a.port(),
                    _pad: 0,
                }),
            }
        }
        Ok(ListenerConfig {
            http4: e4(self.http_v4, "http_v4")?,
            https4: e4(self.https_v4, "https_v4")?,
            dns4: e4(self.dns_v4, "dns_v4")?,
            http6: e6(self.http_v6, "http_v6")?,
            https6: e6(self.https_v6, "https_v6")?,
            dns6: e6(self.dns_v6, "dns_v6")?,
            agent_uid: self.agent_uid,
            default_mode: self.default_mode.raw(),
            default_policy_id: self.default_policy_id,
            loopback: match self.loopback {
                LoopbackPolicy::Allow => loopback::ALLOW,
                LoopbackPolicy::Deny => loopback::DENY,
            },
        })
    }
}
