//! Shared support for the end-to-end tests: test CAs, local origins that echo what they
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed setup step should abort the test loudly
//! received, a runner for the real `iron-agent` binary that captures its JSON logs, and HTTP
//! clients that control Host, SNI and trust exactly.
//!
//! Everything binds 127.0.0.1 port 0; nothing leaves loopback.

pub mod agent;
pub mod ca;
pub mod client;
pub mod config;
pub mod control;
pub mod curl;
pub mod dns;
pub mod ebpf_world;
pub mod fs_snapshot;
pub mod grpc_transform;
pub mod mitm;
pub mod moto;
pub mod netns;
pub mod origin;
pub mod postgres;
pub mod proxies;
pub mod token_server;
pub mod ws;

pub use agent::{Agent, AgentBuilder};
pub use ca::TestCa;
pub use client::{
    Reply, connect_tunnel, echo_header, h2_handshake, http_request, https_request, tls_connect,
};
pub use config::{AgentConfig, Transform, allow_localhost_with_secret};
pub use origin::{Origin, OriginKind};
pub use token_server::{Recorded, TokenServer};

/// Tests that change machine-wide state take turns: eBPF programs attached at a cgroup (the
/// agent attaches in single-program mode, so a second attach at the root replaces the first,
/// and a program at the root forbids attaching below it), the fixed network namespace and pin
/// directory of [`ebpf_world`], `iron-agent install` on this machine. All such tests live in one
/// test binary (`tests/it`), so one process-wide lock is enough; a panicking holder does not
/// block the others.
pub fn machine_lock() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MACHINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The name libtest knows test function `f` of module `module` (pass `module_path!()`) by: the
/// module path without the crate. A test that re-runs one of its binary's tests in a child
/// process (`--exact NAME`) must use it, since every test binary holds several modules.
pub fn test_name(module: &str, f: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{f}"),
        None => f.to_string(),
    }
}

/// A helper script in `tests/helpers/` (Python fakes and clients).
pub fn helper(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("helpers")
        .join(name)
}

/// A multi-threaded runtime for tests that drive blocking helpers too.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A helper process the test started (a server, a sleeper); killed and reaped on drop.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
