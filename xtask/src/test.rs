//! `cargo xtask test`: prerequisites, format check, clippy, build, tests (docs/testing.md).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cmd::{self, cargo, run_streamed};
use crate::setup;

#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Also run the short fuzz run (`cargo xtask fuzz --seconds 30`) after the tests. Off by
    /// default: the nightly release build of the targets takes longer than CI can spare on
    /// 2 cores; the seed inputs run as unit tests either way (agent/src/fuzzing).
    #[arg(long)]
    fuzz: bool,
    /// Passed to `cargo test` after `--workspace`: `cargo xtask test proxy` filters by name;
    /// `cargo xtask test -- proxy -- --nocapture` reaches the test binaries (clap eats the first `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

/// cargo in the workspace root. As root (CI), `IRON_AGENT_REQUIRE_EBPF=1` makes agent/build.rs
/// fail instead of embedding a placeholder object, so the eBPF tests cannot silently pass on a
/// build without programs.
fn cargo_at(root: &Path) -> Command {
    let mut c = cargo();
    c.current_dir(root);
    if setup::is_root() {
        c.env("IRON_AGENT_REQUIRE_EBPF", "1");
    }
    c
}

pub fn run(args: &TestArgs) -> Result<()> {
    let root = cmd::workspace_root()?;
    let target = cmd::target_dir(&root);
    setup::ensure_prerequisites()?;

    if !args.no_lint {
        run_streamed(cargo_at(&root).args(["fmt", "--all", "--check"]))
            .context("formatting differs; run `cargo fmt --all`")?;
        run_streamed(cargo_at(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }

    // The end-to-end tests spawn the real binary, so it must exist before `cargo test` starts.
    run_streamed(cargo_at(&root).args(["build", "--workspace"]))?;
    let agent_bin = target.join("debug").join("iron-agent");
    if !agent_bin.is_file() {
        bail!(
            "`cargo build --workspace` did not produce {}",
            agent_bin.display()
        );
    }
    if !setup::is_root() {
        eprintln!(
            "==> note: not root, so the eBPF, install and `run -- CMD` tests skip (each prints SKIP)"
        );
    }

    // Every crate's unit tests and its one integration binary (`tests/it`, see docs/testing.md);
    // --no-fail-fast: a failure in one binary still runs (and reports) the others.
    run_streamed(
        cargo_at(&root)
            .env("IRON_AGENT_BIN", &agent_bin)
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(&args.cargo_test_args),
    )?;
    if args.fuzz {
        crate::fuzz::run(&crate::fuzz::FuzzArgs::ci())?;
    }
    eprintln!("==> all checks passed");
    Ok(())
}
