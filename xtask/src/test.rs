//! `cargo xtask test`: prerequisites, format check, clippy, build, tests.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cmd::{self, cargo, run_streamed, succeeds};

#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Passed to `cargo test` after `--workspace`: `cargo xtask test proxy` filters by name;
    /// `cargo xtask test -- proxy -- --nocapture` reaches the test binaries (clap eats the first `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

/// One thing the build or tests need. `check` must be cheap and side-effect free; `install` runs
/// only when `check` fails, and `check` is repeated afterwards so a broken install fails loudly.
///
/// The eBPF build will add its steps to [`prerequisites`] in order: `rust-src` for the nightly
/// toolchain, `llvm-22-dev` (apt), `bpf-linker@0.13.0 --features llvm-22`, and the bpffs mount
/// (see shared/design/ebpf-recipe.md).
struct Prereq {
    name: &'static str,
    /// Shown before installing, so the user knows why the command is downloading things.
    why: &'static str,
    check: fn() -> bool,
    install: fn() -> Result<()>,
}

fn prerequisites() -> Vec<Prereq> {
    vec![
        Prereq {
            name: "cargo",
            why: "builds everything",
            check: || succeeds(cargo().arg("--version")),
            install: || bail!("cargo not found: install Rust with rustup (https://rustup.rs)"),
        },
        Prereq {
            name: "rustfmt",
            why: "`cargo fmt --check` is part of the test command",
            check: || succeeds(cargo().args(["fmt", "--version"])),
            install: || run_streamed(Command::new("rustup").args(["component", "add", "rustfmt"])),
        },
        Prereq {
            name: "clippy",
            why: "clippy with -D warnings is part of the test command",
            check: || succeeds(cargo().args(["clippy", "--version"])),
            install: || run_streamed(Command::new("rustup").args(["component", "add", "clippy"])),
        },
    ]
}

pub fn ensure_prerequisites() -> Result<()> {
    for p in prerequisites() {
        if (p.check)() {
            continue;
        }
        eprintln!(
            "==> prerequisite `{}` is missing ({}); installing it",
            p.name, p.why
        );
        (p.install)().with_context(|| format!("installing prerequisite `{}`", p.name))?;
        if !(p.check)() {
            bail!(
                "prerequisite `{}` is still missing after installing it",
                p.name
            );
        }
    }
    Ok(())
}

pub fn run(args: &TestArgs) -> Result<()> {
    let root = cmd::workspace_root()?;
    let target = cmd::target_dir(&root);
    ensure_prerequisites()?;

    if !args.no_lint {
        run_streamed(cargo().current_dir(&root).args(["fmt", "--all", "--check"]))
            .context("formatting differs; run `cargo fmt --all`")?;
        run_streamed(cargo().current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }

    // The end-to-end tests spawn the real binary, so it must exist before `cargo test` starts.
    run_streamed(cargo().current_dir(&root).args(["build", "--workspace"]))?;
    let agent_bin = target.join("debug").join("iron-agent");
    if !agent_bin.is_file() {
        bail!(
            "`cargo build --workspace` did not produce {}",
            agent_bin.display()
        );
    }

    run_streamed(
        cargo()
            .current_dir(&root)
            .env("IRON_AGENT_BIN", &agent_bin)
            .args(["test", "--workspace"])
            .args(&args.cargo_test_args),
    )?;
    eprintln!("==> all checks passed");
    Ok(())
}
