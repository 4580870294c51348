//! Upstream: dial the destination the policy allowed and exchange the request.
//!
//! [`connect::Connector`] resolves the name, checks `upstream_deny_cidrs` on every address it
//! is about to dial (so DNS rebinding cannot reach a denied range), connects, and wraps TLS.
//! [`client::UpstreamClient`] pools connections and enforces the response-header timeout.

pub mod client;
pub mod connect;
pub mod io;

pub use client::{UpstreamClient, UpstreamError};
pub use connect::{ConnectError, Connector, DenyList};
