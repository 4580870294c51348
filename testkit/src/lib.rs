//! Test support shared by `control/tests` (iron-control's integration tests) and `tests/` (the
//! end-to-end suite): where the binaries under test are, a child process whose stderr (JSON
//! log lines) is captured, and the real `iron-control serve` on a free loopback port.
//!
//! Kept apart from both so neither test build pulls in the other's dependencies: the
//! end-to-end helpers link the agent library, control's tests link only iron-control.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failed setup step should abort the test loudly

pub mod control;
pub mod logs;

pub use control::{ControlBuilder, ControlServer};
pub use logs::{LogLines, spawn_logged};

use std::path::{Path, PathBuf};

/// The `iron-agent` binary under test: `$IRON_AGENT_BIN`, else `<target>/debug/iron-agent`
/// (`cargo build` first).
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("IRON_AGENT_BIN") {
        return PathBuf::from(p);
    }
    target_debug().join("iron-agent")
}

/// `$CARGO_TARGET_DIR/debug`, else the workspace's `target/debug`.
fn target_debug() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"))
        .join("debug")
}
