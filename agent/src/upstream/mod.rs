//! Upstream: dial the destination the policy allowed and exchange the request.
//!
//! [`connect::Connector`] resolves the name, checks `upstream_deny_cidrs` on every address it
//! is about to dial (so DNS rebinding cannot reach a denied range), connects, and wraps TLS.
//! [`client::UpstreamClient`] pools connections and enforces the response-header timeout.
//! [`proxy`] routes those dials through `proxy.upstream_proxy` when configured.

pub mod client;
pub mod connect;
pub mod io;
pub mod proxy;

pub use client::{UpstreamClient, UpstreamError};
pub use connect::{ConnectError, Connector, DenyList};
pub use proxy::UpstreamProxies;
