//! iron-agent: a default-deny egress agent, drop-in compatible with iron-proxy.
//!
//! The data path is laid out in stage order: [`accept`] → [`identify`] → [`policy`] →
//! [`transform`] (request phase) → [`upstream`] → [`transform`] (response phase) → [`audit`],
//! with [`outcome`] deciding every answer and its audit fields and [`message`] holding the HTTP
//! types every stage shares. [`proxy`] wires the stages together for one request; [`tunnel`]
//! (CONNECT/SOCKS5) and [`sni`] (sni-only passthrough) are further ways in built on it. [`app`]
//! builds the runtime from [`config`] and runs the listeners. Side paths: [`dns`], [`tls`],
//! [`resolve`], [`ebpf`]. See docs/architecture.md.

pub mod accept;
pub mod app;
#[cfg(test)]
mod arch_check;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod dns;
pub mod ebpf;
pub mod enroll;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod identify;
pub mod install;
pub mod managed;
pub mod mcp;
pub mod message;
pub mod metrics;
pub mod mint;
pub mod ops;
pub mod outcome;
pub mod policy;
pub mod postgres;
pub mod proxy;
pub mod resolve;
pub mod secrets;
pub mod sni;
pub mod sys;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod transform;
pub mod tunnel;
pub mod upstream;

/// Version string printed by `iron-agent version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
