//! Command line: `run`, `check-config`, `generate-ca`, `version`, plus iron-proxy's Go-style
//! single-dash flags (`iron-agent -config FILE`) so the agent is a drop-in replacement.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "iron-agent",
    version = crate::VERSION,
    about = "Default-deny egress agent: policy, credentials and audit for every outbound connection",
    long_about = None,
    after_help = concat!(
        "Examples:\n",
        "  iron-agent generate-ca --outdir ./ca\n",
        "  iron-agent check-config --config iron.yaml\n",
        "  iron-agent run --config iron.yaml\n",
        "  sudo iron-agent run --config iron.yaml --user ci -- curl https://example.com/\n",
        "\n",
        "Documentation: docs/README.md in the source tree; `iron-agent install` puts it in /usr/share/doc/iron-agent/",
    ),
)]
pub struct Cli {
    /// Config file (same as `run --config`); without a subcommand the agent runs.
    #[arg(long, global = false)]
    pub config: Option<PathBuf>,

    /// Managed mode: the proxy token (`iprx_...`) for the control plane (same as `run
    /// --token`; default `$IRON_PROXY_TOKEN`). Never logged.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground.
    #[command(after_help = concat!(
        "Examples:\n",
        "  iron-agent run --config iron.yaml\n",
        "  sudo iron-agent run --config iron.yaml --user ci -- curl https://example.com/\n",
        "  sudo iron-agent run --learn --summary \"$GITHUB_STEP_SUMMARY\" --config iron.yaml -- make test\n",
        "  (the command to jail goes after `--`)\n\n",
        "Documentation: docs/getting-started.md, docs/intercept.md"
    ))]
    Run(RunArgs),
    /// Validate a config file and this host's readiness for it: exit 0, or 1 listing every error.
    #[command(after_help = concat!(
        "Checks everything `run` needs short of binding ports: the config itself, intercept users\n",
        "and cgroups, CA files, file secret sources, listen addresses and eBPF prerequisites.\n\n",
        "Examples:\n",
        "  iron-agent check-config --config iron.yaml\n",
        "  iron-agent check-config --config iron.yaml --no-host-checks   # config for another host\n\n",
        "Documentation: docs/configuration.md"
    ))]
    CheckConfig(CheckConfigArgs),
    /// Generate a MITM CA (ca.crt 0644, ca.key 0600); never overwrites.
    #[command(after_help = concat!(
        "Example:\n",
        "  iron-agent generate-ca --outdir /etc/iron-agent\n\n",
        "Documentation: docs/tls.md"
    ))]
    GenerateCa(GenerateCaArgs),
    /// Print the version (same as --version).
    #[command(after_help = "Example:\n  iron-agent version\n\nDocumentation: docs/cli.md")]
    Version,
    /// Set the agent up as a systemd service (root): CA, config, trust store, unit; start it.
    #[command(
        long_about = concat!(
            "Set the agent up as a systemd service (root): CA, config, trust store, unit; start it.\n\n",
            "The generated config uses eBPF interception with `default: redirect`: every non-root\n",
            "user of this host (including system accounts such as _apt or systemd-timesync) has its\n",
            "web traffic sent through the agent and everything else denied. To start narrow, name\n",
            "what to govern with --govern-user / --govern-cgroup: the generated config then uses\n",
            "`default: exempt` and governs only those.\n\n",
            "Before writing anything it makes the checks of `check-config` on the config that will\n",
            "be in place (users, cgroups, CA pair, secret files, eBPF prerequisites) and refuses\n",
            "with every problem by field. The docs go to /usr/share/doc/iron-agent/.\n",
            "--root DIR is a dry run below DIR: no host commands, eBPF prerequisites only reported."
        ),
        after_help = concat!(
            "Examples:\n",
            "  sudo iron-agent install --allow api.github.com,pypi.org\n",
            "  sudo iron-agent install --govern-user ci --allow api.github.com\n",
            "  sudo iron-agent install --config ./iron.yaml --no-start\n\n",
            "Documentation: docs/installation.md"
        )
    )]
    Install(InstallArgs),
    /// Enroll this host with a control plane, store its proxy token, write a managed-mode
    /// config, and install and start the service (as `install` does) unless --no-service.
    #[command(after_help = concat!(
        "Examples:\n",
        "  sudo iron-agent init --enrollment-token 1a46ef8a... --control-plane https://cp.example\n",
        "  sudo iron-agent init -enrollment-token 1a46ef8a...        # iron-proxy's spelling\n",
        "  iron-agent init --enrollment-token 1a46ef8a... --no-service --state-dir ./agent-state\n\n",
        "Documentation: docs/enrollment.md"
    ))]
    Init(InitArgs),
    /// Undo `install`: stop the service, detach the programs, remove what install created.
    #[command(after_help = concat!(
        "Examples:\n",
        "  sudo iron-agent uninstall\n",
        "  sudo iron-agent uninstall --purge\n\n",
        "Documentation: docs/installation.md"
    ))]
    Uninstall(UninstallArgs),
    /// Remove the pinned eBPF programs so governed users get their network back without the agent.
    #[command(after_help = concat!(
        "A stopped agent leaves its programs attached on purpose (governed traffic fails closed).\n",
        "This releases them; the next `run` attaches them again.\n\n",
        "Examples:\n",
        "  sudo iron-agent detach\n",
        "  sudo iron-agent detach --config /etc/iron-agent/config.yaml\n\n",
        "Documentation: docs/installation.md"
    ))]
    Detach(DetachArgs),
    /// Show whether programs are attached, the governed identities, and the counters.
    #[command(after_help = concat!(
        "Examples:\n",
        "  iron-agent status\n",
        "  iron-agent status --json\n\n",
        "Documentation: docs/installation.md"
    ))]
    Status(StatusArgs),
    /// Dry-run requests through a config (`test`), re-judge an audit log against one (`replay`),
    /// or propose an allowlist from an audit log (`suggest`).
    #[command(after_help = concat!(
        "Examples:\n",
        "  iron-agent policy test --config iron.yaml GET https://api.github.com/repos/x\n",
        "  iron-agent policy replay audit.jsonl --config new.yaml\n",
        "  iron-agent policy suggest audit.jsonl --config observe.yaml > enforce.yaml\n\n",
        "Documentation: docs/policy-workflow.md"
    ))]
    Policy(crate::ops::PolicyArgs),
    /// Summarise an audit log per identity and host (markdown or JSON).
    #[command(after_help = concat!(
        "Examples:\n",
        "  iron-agent summary audit.jsonl >> \"$GITHUB_STEP_SUMMARY\"\n",
        "  iron-agent summary audit.jsonl --format json\n\n",
        "Documentation: docs/policy-workflow.md"
    ))]
    Summary(crate::ops::SummaryArgs),
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
        /// `build` (no sink), `off` (counted, not written) or `on` (every line written).
        #[arg(long, value_enum, default_value = "on")]
        mode: crate::audit::bench::Mode,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML config; without it the embedded default config is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Managed mode: the proxy token (`iprx_...`) for the control plane (default
    /// `$IRON_PROXY_TOKEN`); policy and credentials then come from the control plane.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// With `-- CMD`: run CMD as this user (default: the user who invoked sudo, else yourself).
    #[arg(long, requires = "cmd")]
    pub user: Option<String>,
    /// With `-- CMD`: keep VAR in CMD's environment although a secret source of the config
    /// reads it (repeatable). By default every such variable is removed.
    #[arg(long = "keep-env", value_name = "VAR", requires = "cmd")]
    pub keep_env: Vec<String>,
    /// With `-- CMD`: put every allowlist in learn mode (allow and record what it would deny;
    /// then `iron-agent policy suggest`).
    #[arg(long, requires = "cmd")]
    pub learn: bool,
    /// With `-- CMD`: append the run's job summary (markdown, as `iron-agent summary`) to FILE
    /// at exit, e.g. "$GITHUB_STEP_SUMMARY".
    #[arg(long, value_name = "FILE", requires = "cmd")]
    pub summary: Option<PathBuf>,
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
    /// Govern only this user (repeatable); the generated config then exempts everyone else.
    #[arg(long, value_name = "USER")]
    pub govern_user: Vec<String>,
    /// Govern only this cgroup v2 directory (repeatable); everyone else is exempt.
    #[arg(long, value_name = "PATH")]
    pub govern_cgroup: Vec<PathBuf>,
    /// Enable the service but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Install below this directory instead of `/` and run no host commands (a dry run to inspect).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Enroll with a control plane first (as `init` does) and install a managed-mode config.
    #[arg(long, value_name = "TOKEN", conflicts_with = "allow")]
    pub enrollment_token: Option<String>,
    /// With --enrollment-token: the control plane's URL (default `$IRON_CONTROL_PLANE_URL`,
    /// else https://api.iron.sh).
    #[arg(long, value_name = "URL", requires = "enrollment_token")]
    pub control_plane: Option<String>,
    /// With --enrollment-token: enroll again although this host holds a proxy token.
    #[arg(long, requires = "enrollment_token")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The enrollment token from the control plane (shown once when it was created). Never
    /// printed; `$IRON_ENROLLMENT_TOKEN` keeps it out of the process list.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "IRON_ENROLLMENT_TOKEN",
        hide_env_values = true
    )]
    pub enrollment_token: String,
    /// The control plane's base URL (default `$IRON_CONTROL_PLANE_URL`, else https://api.iron.sh).
    #[arg(long, value_name = "URL")]
    pub control_plane: Option<String>,
    /// Allow plain http:// to a non-loopback control plane (written to the config too).
    #[arg(long)]
    pub allow_insecure: bool,
    /// Where the proxy token is stored (and, with --no-service, the config and CA).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/iron-agent")]
    pub state_dir: PathBuf,
    /// Enroll and write the config only; install and start no service.
    #[arg(long)]
    pub no_service: bool,
    /// Enroll again although this host holds a proxy token (replaces token and config).
    #[arg(long)]
    pub force: bool,
    /// The proxy's name on the control plane (default: this host's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Start from this config (listeners, TLS, ...) instead of a generated one; init adds the
    /// control_plane block.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Service: govern only this user (repeatable), as `install --govern-user`.
    #[arg(long, value_name = "USER", conflicts_with = "no_service")]
    pub govern_user: Vec<String>,
    /// Service: govern only this cgroup v2 directory (repeatable).
    #[arg(long, value_name = "PATH", conflicts_with = "no_service")]
    pub govern_cgroup: Vec<PathBuf>,
    /// Service: enable it but do not start it.
    #[arg(long, conflicts_with = "no_service")]
    pub no_start: bool,
    /// Service: install below this directory and run no host commands (a dry run).
    #[arg(long, value_name = "DIR", conflicts_with = "no_service")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Also remove the CA (/etc/iron-agent/ca.crt, ca.key).
    #[arg(long)]
    pub purge: bool,
    /// Undo an `install --root DIR` (below DIR, no host commands).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Config whose `intercept.pin_dir` to release (default: the installed config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Pin directory to release (overrides --config).
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Config whose identities and pin directory to show (default: the installed one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Read an `install --root DIR` installation.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// YAML config file to check.
    #[arg(long)]
    pub config: PathBuf,
    /// Check the config only, not this host (users, cgroups, CA and secret files, eBPF).
    #[arg(long)]
    pub no_host_checks: bool,
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
    /// Directory to write ca.crt and ca.key into (created if missing).
    #[arg(long)]
    pub outdir: PathBuf,
    /// Common name of the CA certificate.
    #[arg(long, default_value = "iron-agent CA")]
    pub name: String,
    /// Validity of the CA certificate, in hours.
    #[arg(long, default_value_t = 2160)]
    pub expiry_hours: u64,
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub alg: Alg,
}

/// What `version` and `--version` print.
pub fn version_line() -> String {
    format!("iron-agent {}", crate::VERSION)
}

/// Prints a clap error (help and version are not errors) and, for `run` with stray arguments,
/// the `--` that was probably missing. Returns the exit status.
pub fn usage_error(e: clap::Error, args: &[OsString]) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    if !e.use_stderr() {
        return std::process::ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::UnknownArgument && args.iter().any(|a| a == "run") {
        eprintln!("{}", run_hint(args));
    }
    std::process::ExitCode::from(2)
}

/// `run --user x true` → suggests `run --user x -- true`.
fn run_hint(args: &[OsString]) -> String {
    let mut out = Vec::new();
    let mut expecting_value = false;
    let mut inserted = false;
    for a in args.iter().skip(1) {
        let s = a.to_string_lossy();
        if !inserted && !expecting_value && s != "run" && !s.starts_with('-') {
            out.push("--".to_string());
            inserted = true;
        }
        expecting_value = !inserted && (s == "--config" || s == "--user");
        out.push(s.into_owned());
    }
    format!(
        "hint: to run a command under the agent, put it after `--`: iron-agent {}",
        out.join(" ")
    )
}

/// Long options that iron-proxy users pass with a single dash (Go's `flag` package).
const GO_STYLE: [&str; 10] = [
    "allow",
    "token",
    "config",
    "outdir",
    "name",
    "expiry-hours",
    "alg",
    "version",
    "help",
    "iterations",
];

/// `init`'s options in the same single-dash spelling (`init -enrollment-token T`).
const GO_STYLE_INIT: [&str; 5] = [
    "enrollment-token",
    "control-plane",
    "state-dir",
    "no-service",
    "force",
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
                if GO_STYLE.contains(&name) || GO_STYLE_INIT.contains(&name) {
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
    fn run_hint_inserts_the_separator() {
        let args: Vec<OsString> = ["iron-agent", "run", "--user", "x", "true", "-v"]
            .map(OsString::from)
            .to_vec();
        assert!(
            run_hint(&args).ends_with("iron-agent run --user x -- true -v"),
            "{}",
            run_hint(&args)
        );
    }

    #[test]
    fn every_option_is_described() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    a.get_help().is_some(),
                    "{} --{id} has no description",
                    c.get_name()
                );
            }
            for s in c.get_subcommands() {
                if s.is_hide_set() || s.get_name() == "help" {
                    continue;
                }
                assert!(
                    s.get_about().is_some(),
                    "{} has no description",
                    s.get_name()
                );
                let after = s
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(
                    after.contains("iron-agent"),
                    "{} has no example",
                    s.get_name()
                );
                assert!(
                    after.contains("\nDocumentation: docs/"),
                    "{} has no docs pointer",
                    s.get_name()
                );
                walk(s);
            }
        }
        walk(&Cli::command());
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
    fn init_go_style() {
        let c = parse(&[
            "iron-agent",
            "init",
            "-enrollment-token",
            "abc",
            "-control-plane=http://127.0.0.1:1",
            "-no-service",
        ]);
        match c.command {
            Some(Command::Init(a)) => {
                assert_eq!(a.enrollment_token, "abc");
                assert_eq!(a.control_plane.as_deref(), Some("http://127.0.0.1:1"));
                assert!(a.no_service && !a.force);
                assert_eq!(a.state_dir, PathBuf::from("/var/lib/iron-agent"));
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
