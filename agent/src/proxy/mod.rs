//! The proxy proper: serve HTTP/1.1 and HTTP/2 connections ([`server`]) and, for one request,
//! run the stages in order ([`handler`]: identify → policy → request transforms → upstream →
//! response transforms → audit) and answer the client.
//!
//! The other ways in (`tunnel`, `sni`) build on this module; it imports neither.

pub mod audited_body;
pub mod conn;
mod first_byte;
pub mod forward;
pub mod handler;
mod head_limits;
pub mod limits;
mod linger;
mod mcp_hook;
pub mod runtime;
pub mod server;
pub mod websocket;

pub use conn::{ConnInfo, TunnelInfo};
pub use runtime::{Profile, Profiles, Runtime};
