//! `cargo xtask run [-- ARGS]`: set up, build the agent (release), and start it on the embedded
//! default config (`iron-agent run ARGS`), the README's first command.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

use crate::cmd::{self, cargo, run_streamed};
use crate::setup;

#[derive(Args)]
pub struct RunArgs {
    /// Passed to `iron-agent run`, e.g. `cargo xtask run -- -- curl http://example.com/` to jail
    /// a command (root).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let root = cmd::workspace_root()?;
    setup::ensure_prerequisites()?;
    run_streamed(
        cargo()
            .current_dir(&root)
            .args(["build", "--release", "-p", "iron-agent"]),
    )?;
    let bin = cmd::target_dir(&root).join("release").join("iron-agent");
    let mut c = Command::new(&bin);
    c.arg("run").args(&args.args);
    eprintln!("==> {}", cmd::describe(&c));
    // exec: Ctrl-C and the exit status belong to the agent, not to a wrapper.
    let err = c.exec();
    bail!("starting {}: {err}", bin.display())
}
