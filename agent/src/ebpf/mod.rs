//! eBPF interception (userspace side): the only module that talks to aya.
//!
//! The programs in `agent-ebpf` are attached at the cgroup v2 root and decide per operation
//! whether the task is governed (its uid has a policy, it is inside a governed cgroup subtree, or
//! the default mode applies to it). Governed TCP to ports 80/443 is redirected to the agent's
//! HTTP/HTTPS listeners, UDP to port 53 to its DNS listener; other non-loopback TCP/UDP is denied
//! with EPERM, and only TCP/UDP inet sockets can be created. See `agent_common` for the map ABI.
//!
//! Usage by the agent:
//! ```no_run
//! # use iron_agent::ebpf::*;
//! # use iron_agent::identify::{ClientAddr, LocalAddr, PolicyId, Uid};
//! # fn f() -> Result<(), InterceptError> {
//! let cfg = InterceptConfig {
//!     http_v4: Some("127.0.0.1:15080".parse().unwrap()),
//!     https_v4: Some("127.0.0.1:15443".parse().unwrap()),
//!     dns_v4: Some("127.0.0.1:15053".parse().unwrap()),
//!     ..InterceptConfig::default()
//! };
//! let icpt = Interceptor::install_or_adopt(&cfg)?; // after a restart: adopts the pins
//! icpt.set_uid_policy(Uid(1001), Mode::Redirect, PolicyId(7))?;
//! // for every connection accepted on a redirect listener:
//! # let (peer, local) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
//! if let Some(origin) = icpt.lookup(ClientAddr(peer), LocalAddr(local)) {
//!     println!("{} uid={} pid={} comm={}", origin.orig_dst, origin.uid, origin.pid, origin.comm);
//! }
//! # Ok(()) }
//! ```

mod agent_ports;
mod btf;
mod config;
mod db_redirects;
mod error;
pub mod harden;
mod interceptor;
pub mod log;
mod lookup;
mod pins;
pub mod protect;
mod raw_link;
mod sys;

pub use crate::identify::{ConnOrigin, OrigDstLookup};
pub use agent_common::{Counter, ListenerConfig, PIN_DIR};
pub use agent_ports::{AgentPort, AgentPortTable, PortGroup};
pub use config::{InterceptConfig, LoopbackPolicy, Mode};
pub use db_redirects::{DbRedirectTable, dest_key, listener_targets};
pub use error::InterceptError;
pub use interceptor::{Counters, Interceptor, is_installed, object_built, pinned_counters};
pub use lookup::{OrigDstTable, sock_key};
pub use sys::{BPFFS_MOUNT, cgroup_id, cgroup2_mount, ensure_bpffs};
