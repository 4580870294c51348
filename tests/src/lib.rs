//! Shared support for the end-to-end tests: test CAs, local origins that echo what they
//! received, a runner for the real `iron-agent` binary that captures its JSON logs, and HTTP
//! clients that control Host, SNI and trust exactly.
//!
//! Everything binds 127.0.0.1 port 0; nothing leaves loopback.

pub mod agent;
pub mod ca;
pub mod client;
pub mod origin;

pub use agent::{Agent, AgentBuilder};
pub use ca::TestCa;
pub use client::{Reply, http_request, https_request};
pub use origin::{Origin, OriginKind};

/// A multi-threaded runtime for tests that drive blocking helpers too.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
