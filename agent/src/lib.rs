//! iron-agent: a default-deny egress agent, drop-in compatible with iron-proxy.
//!
//! The data path is laid out in stage order:
//! [`accept`] → [`identify`] → [`policy`] (via the [`transform`] pipeline) → [`transform`] →
//! [`upstream`] → [`audit`]. [`proxy`] wires the stages together for one request; [`app`] builds
//! the runtime from [`config`] and runs the listeners. Side paths: [`dns`], [`tls`], [`resolve`]; [`tunnel`] (CONNECT/SOCKS5) and [`sni`]
//! (sni-only passthrough) are further ways in.

pub mod accept;
pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod dns;
pub mod ebpf;
pub mod identify;
pub mod install;
pub mod mint;
pub mod policy;
pub mod postgres;
pub mod proxy;
pub mod resolve;
pub mod secrets;
pub mod sni;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod transform;
pub mod tunnel;
pub mod upstream;

/// Version string printed by `iron-agent version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
