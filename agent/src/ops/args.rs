//! The command-line arguments of the operator tools (`policy test`, `policy replay`,
//! `policy suggest`, `summary`); `cli.rs` only wires them in.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Dry-run requests through the configured pipelines, contacting nothing: exit 0 allow,
    /// 1 deny, 2 error.
    #[command(after_help = concat!(
        "Prints the decision, the deciding rule (file:line of the YAML), each transform's action\n",
        "and the secrets that would be injected (names only). No DNS lookup, no dial, no secret\n",
        "store is contacted.\n\n",
        "Examples:\n",
        "  iron-agent policy test --config iron.yaml GET https://api.github.com/repos/x\n",
        "  iron-agent policy test --config iron.yaml --identity user:ci https://pypi.org/simple/\n",
        "  iron-agent policy test --config iron.yaml --header 'Authorization: Bearer PLACEHOLDER' POST https://api.example.com/v1\n\n",
        "Documentation: docs/policy-workflow.md"
    ))]
    Test(TestArgs),
    /// Re-judge the requests of an audit log against a candidate config and show what flips:
    /// exit 1 when a request that was allowed would now be denied.
    #[command(after_help = concat!(
        "Examples:\n",
        "  iron-agent policy replay audit.jsonl --config new.yaml\n",
        "  iron-agent policy replay audit.jsonl --config new.yaml --format json\n\n",
        "Documentation: docs/policy-workflow.md"
    ))]
    Replay(ReplayArgs),
    /// Propose the minimal allowlist that admits what an audit log recorded (e.g. a run in
    /// learn mode), as YAML ready to paste, with request counts on every entry.
    #[command(after_help = concat!(
        "Hosts first (three or more subdomains of one parent become `*.parent`), then method +\n",
        "path rules (ids, hashes and positions with three or more values become `*`), per\n",
        "pipeline (top level, or the intercept.policies entry that judged). Exit 0, or 2 on an\n",
        "unreadable file or a bad record (its line named).\n\n",
        "Examples:\n",
        "  iron-agent policy suggest audit.jsonl\n",
        "  iron-agent policy suggest audit.jsonl --config observe.yaml > enforce.yaml\n",
        "  iron-agent policy suggest audit.jsonl --diff enforce.yaml\n\n",
        "Documentation: docs/policy-workflow.md"
    ))]
    Suggest(SuggestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// YAML config whose pipelines judge the requests.
    #[arg(long)]
    pub config: PathBuf,
    /// Whose pipeline judges: `user:NAME`, `uid:N` or `policy:NAME` (an `intercept.policies`
    /// entry); default: the top-level `transforms`.
    #[arg(long, value_name = "KIND:NAME")]
    pub identity: Option<String>,
    /// A request header, `Name: value` (repeatable); sent with every request.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: TestFormat,
    /// Requests: `[METHOD] URL` (`GET https://api.github.com/repos/x`; the method defaults to
    /// GET), as separate words or one quoted word each.
    #[arg(required = true, value_name = "REQUEST")]
    pub requests: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Audit log: the agent's JSON lines (other lines are skipped).
    #[arg(value_name = "AUDIT.jsonl")]
    pub audit: PathBuf,
    /// The candidate config to judge the recorded requests with.
    #[arg(long)]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: ReportFormat,
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Audit log: the agent's JSON lines (other lines are skipped).
    #[arg(value_name = "AUDIT.jsonl")]
    pub audit: PathBuf,
    /// The config the log was recorded under: records are matched to its pipelines, and the
    /// output is this config with its allowlists replaced by the suggestion.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print what the suggestion adds and removes against this config's allowlists instead.
    #[arg(long, value_name = "F")]
    pub diff: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: SuggestFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuggestFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Audit log: the agent's JSON lines (other lines are skipped).
    #[arg(value_name = "AUDIT.jsonl")]
    pub audit: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Json,
}
