//! Upstream: dial the destination the policy allowed and exchange the request.
//!
//! [`direct::DirectDialer`] resolves the name, checks `upstream_deny_cidrs` on every address it
//! is about to dial (so DNS rebinding cannot reach a denied range) and connects;
//! [`connect::Connector`] adds `proxy.upstream_proxy` routing ([`proxy`]) and TLS;
//! [`client::UpstreamClient`] pools connections and enforces the response-header timeout.
//! [`error`] is the upstream part of the error taxonomy.

pub mod client;
pub mod connect;
pub mod direct;
pub mod error;
pub mod io;
pub mod proxy;

pub use client::UpstreamClient;
pub use connect::Connector;
pub use direct::{DenyList, DirectDialer};
pub use error::{ConnectError, UpstreamError, UpstreamErrorKind};
pub use proxy::UpstreamProxies;
