//! Command line: `run`, `check-config`, `generate-ca`, `version`, plus iron-proxy's Go-style
//! single-dash flags (`iron-agent -config FILE`) so the agent is a drop-in replacement.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "iron-agent", version = crate::VERSION, about = "Default-deny egress agent", long_about = None)]
pub struct Cli {
    /// Config file (same as `run --config`); without a subcommand the agent runs.
    #[arg(long, global = false)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground.
    Run(RunArgs),
    /// Validate a config file: exit 0, or 1 listing every error.
    CheckConfig(CheckConfigArgs),
    /// Generate a MITM CA (ca.crt 0644, ca.key 0600); never overwrites.
    GenerateCa(GenerateCaArgs),
    /// Print the version.
    Version,
    /// Set the agent up as a systemd service (root): CA, config, trust store, unit; start it.
    Install(InstallArgs),
    /// Undo `install`: stop the service, detach the programs, remove what install created.
    Uninstall(UninstallArgs),
    /// Show whether programs are attached, the governed identities, and the counters.
    Status(StatusArgs),
    /// Measure leaf-certificate minting (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchMint {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// Measure building, serialising and writing audit records (used by `cargo xtask bench`);
    /// the records go to stderr.
    #[command(hide = true)]
    BenchAudit {
        #[arg(long, default_value_t = 200_000)]
        records: u64,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML config; without it the embedded default config is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With `-- CMD`: run CMD as this user (default: the user who invoked sudo, else yourself).
    #[arg(long, requires = "cmd")]
    pub user: Option<String>,
    /// With `-- CMD`: keep VAR in CMD's environment although a secret source of the config
    /// reads it (repeatable). By default every such variable is removed.
    #[arg(long = "keep-env", value_name = "VAR", requires = "cmd")]
    pub keep_env: Vec<String>,
    /// `-- CMD ARGS...`: run CMD in a fresh cgroup governed by a private agent instance and exit
    /// with its status (root).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Install this config (validated first) instead of generating one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Hosts for the generated allowlist, comma separated (none: deny everything).
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Enable the service but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Install below this directory instead of `/` and run no host commands (tests).
    #[arg(long, hide = true)]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Also remove the CA (/etc/iron-agent/ca.crt, ca.key).
    #[arg(long)]
    pub purge: bool,
    #[arg(long, hide = true)]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Config whose identities and pin directory to show (default: the installed one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    #[arg(long, hide = true)]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Alg {
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "rsa4096")]
    Rsa4096,
    #[value(name = "ed25519")]
    Ed25519,
}

#[derive(Debug, Args)]
pub struct GenerateCaArgs {
    #[arg(long)]
    pub outdir: PathBuf,
    #[arg(long, default_value = "iron-agent CA")]
    pub name: String,
    #[arg(long, default_value_t = 2160)]
    pub expiry_hours: u64,
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub alg: Alg,
}

/// Long options that iron-proxy users pass with a single dash (Go's `flag` package).
const GO_STYLE: [&str; 9] = [
    "allow",
    "config",
    "outdir",
    "name",
    "expiry-hours",
    "alg",
    "version",
    "help",
    "iterations",
];

/// Rewrites `-config x` / `-config=x` into `--config x` / `--config=x`. Nothing after a bare `--`
/// is touched: that is the jailed command's own argument list.
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut passthrough = false;
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 || passthrough {
                return a;
            }
            if a == "--" {
                passthrough = true;
                return a;
            }
            let Some(s) = a.to_str() else { return a };
            if let Some(rest) = s.strip_prefix('-').filter(|r| !r.starts_with('-')) {
                let name = rest.split('=').next().unwrap_or(rest);
                if GO_STYLE.contains(&name) {
                    return OsString::from(format!("-{s}"));
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn go_style_config() {
        let c = parse(&["iron-agent", "-config", "/etc/x.yaml"]);
        assert_eq!(c.config.unwrap(), PathBuf::from("/etc/x.yaml"));
        let c = parse(&["iron-agent", "-config=/y.yaml"]);
        assert_eq!(c.config.unwrap(), PathBuf::from("/y.yaml"));
        let c = parse(&["iron-agent", "run", "--config", "/z.yaml"]);
        assert!(matches!(
            c.command,
            Some(Command::Run(RunArgs {
                config: Some(_),
                ..
            }))
        ));
    }

    #[test]
    fn run_with_command_keeps_its_args() {
        let c = parse(&[
            "iron-agent",
            "run",
            "-config",
            "/c.yaml",
            "--user",
            "ci",
            "--",
            "tool",
            "-config",
            "x",
        ]);
        match c.command {
            Some(Command::Run(a)) => {
                assert_eq!(a.config.unwrap(), PathBuf::from("/c.yaml"));
                assert_eq!(a.user.as_deref(), Some("ci"));
                assert_eq!(a.cmd, ["tool", "-config", "x"].map(OsString::from));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn install_allow_list() {
        let c = parse(&[
            "iron-agent",
            "install",
            "--allow",
            "a.com,b.org",
            "--no-start",
        ]);
        match c.command {
            Some(Command::Install(a)) => {
                assert_eq!(a.allow, ["a.com", "b.org"]);
                assert!(a.no_start);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn generate_ca_defaults() {
        let c = parse(&["iron-agent", "generate-ca", "-outdir", "/tmp/x"]);
        match c.command {
            Some(Command::GenerateCa(a)) => {
                assert_eq!(a.name, "iron-agent CA");
                assert_eq!(a.expiry_hours, 2160);
                assert!(matches!(a.alg, Alg::EcdsaP256));
            }
            other => panic!("{other:?}"),
        }
    }
}
