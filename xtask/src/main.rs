//! Project tasks: `cargo xtask test` (the one test command) and `cargo xtask bench`.

mod bench;
mod children;
mod cmd;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "iron-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check prerequisites, lint, build, and run every test in the workspace.
    Test(test::TestArgs),
    /// Benchmark the agent against a direct connection and a plain TCP relay.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    // Children (origin, relay, agent, oha) must not outlive us on Ctrl-C or SIGTERM.
    children::install_signal_handler()?;
    match Cli::parse().command {
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
