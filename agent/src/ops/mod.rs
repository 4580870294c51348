//! Operator tools that read a config or an audit log and contact nothing:
//! `policy test` (a dry run of the configured pipelines, [`policy_test`]), `policy replay`
//! (recorded requests re-judged against a candidate config, [`replay`]) and `summary` (a job's
//! audit log per identity and host, [`summary`]). All of them judge with the agent's own
//! pipeline and rule code ([`dry_run`]), so what they say cannot drift from what the proxy does.

pub mod args;
pub mod audit_log;
pub mod dry_run;
pub mod locate;
mod markdown;
pub mod policy_test;
pub mod replay;
pub mod request;
pub mod summary;

use std::process::ExitCode;

pub use args::{PolicyArgs, PolicyCommand, ReportFormat, SummaryArgs, TestFormat};

/// Why a tool could not do its job (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Usage(String),
    /// The config cannot be loaded or built (every message names its field).
    #[error("{0}")]
    Config(String),
    /// The audit log cannot be read.
    #[error("{0}")]
    Input(String),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn fail(e: &OpsError) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
    ExitCode::from(2)
}

/// `iron-agent policy ...`.
pub fn policy_command(a: PolicyArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&OpsError::Runtime(e)),
    };
    let run = async {
        match a.command {
            PolicyCommand::Test(t) => test(t).await,
            PolicyCommand::Replay(r) => replay(r),
        }
    };
    match rt.block_on(run) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn test(a: args::TestArgs) -> Result<ExitCode, OpsError> {
    let requests = request::parse_requests(&a.requests, &a.headers)?;
    let identity = a
        .identity
        .as_deref()
        .map(request::Identity::parse)
        .transpose()?;
    let eval = dry_run::Evaluator::load(&a.config)?;
    let sel = eval.select(identity.as_ref())?;
    let mut reports = Vec::new();
    for r in &requests {
        reports.push(eval.test(r, &sel).await);
    }
    match a.format {
        TestFormat::Text => {
            let blocks: Vec<String> = reports.iter().map(policy_test::render_text).collect();
            print!("{}", blocks.join("\n"));
        }
        TestFormat::Json => println!("{}", to_json(&reports)),
    }
    use policy_test::Decision;
    let worst = |d: Decision| reports.iter().any(|r| r.decision == d);
    Ok(if worst(Decision::Error) {
        ExitCode::from(2)
    } else if worst(Decision::Deny) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn replay(a: args::ReplayArgs) -> Result<ExitCode, OpsError> {
    let log = audit_log::AuditLog::read(&a.audit)?;
    let eval = dry_run::Evaluator::load(&a.config)?;
    let r = eval.replay(&log);
    match a.format {
        ReportFormat::Markdown => print!("{}", replay::render_markdown(&r)),
        ReportFormat::Json => println!("{}", to_json(&r)),
    }
    Ok(if r.tightens() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `iron-agent summary AUDIT.jsonl`.
pub fn summary_command(a: SummaryArgs) -> ExitCode {
    let log = match audit_log::AuditLog::read(&a.audit) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let s = summary::summarize(&log);
    match a.format {
        ReportFormat::Markdown => print!("{}", summary::render_markdown(&s)),
        ReportFormat::Json => println!("{}", to_json(&s)),
    }
    ExitCode::SUCCESS
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
