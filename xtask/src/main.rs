//! Project tasks: `cargo xtask setup` (prerequisites), `cargo xtask run` (build and start the
//! agent), `cargo xtask test` (the one test command), `cargo xtask fuzz` and
//! `cargo xtask bench`.

mod bench;
mod children;
mod cmd;
mod fuzz;
mod run;
mod setup;
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
    /// Install what the build and tests need (rust-src, llvm-22-dev, bpf-linker, bpffs, ...).
    Setup,
    /// Set up, build (release) and start the agent on its embedded default config.
    Run(run::RunArgs),
    /// Check prerequisites, lint, build, and run every test in the workspace.
    Test(test::TestArgs),
    /// Build the fuzz targets (nightly, cargo-fuzz) and run each for a while; prints a report.
    Fuzz(fuzz::FuzzArgs),
    /// Benchmark the agent against a direct connection and a plain TCP relay.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    // Children (origin, relay, agent, oha) must not outlive us on Ctrl-C or SIGTERM.
    children::install_signal_handler()?;
    match Cli::parse().command {
        Command::Setup => setup::ensure_prerequisites(),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
