//! Operator tools that read a config or an audit log and contact nothing:
//! `policy test` (a dry run of the configured pipelines, [`policy_test`]), `policy replay`
//! (recorded requests re-judged against a candidate config, [`replay`]), `policy suggest` (an
//! allowlist proposed from a log, [`suggest`]) and `summary` (a job's audit log per identity
//! and host, [`summary`]). All of them judge with the agent's own
//! pipeline and rule code ([`dry_run`]), so what they say cannot drift from what the proxy does.

pub mod args;
pub mod audit_log;
pub mod dry_run;
pub mod job_summary;
pub mod locate;
mod markdown;
pub mod policy_test;
pub mod replay;
pub mod request;
pub mod suggest;
mod suggest_diff;
mod suggest_paths;
mod suggest_yaml;
pub mod summary;

use std::process::ExitCode;

pub use args::{PolicyArgs, PolicyCommand, ReportFormat, SuggestFormat, SummaryArgs, TestFormat};

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
            PolicyCommand::Suggest(s) => suggest_command(s),
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

fn suggest_command(a: args::SuggestArgs) -> Result<ExitCode, OpsError> {
    let log = audit_log::AuditLog::read_strict(&a.audit)?;
    let eval = a
        .config
        .as_deref()
        .map(dry_run::Evaluator::load)
        .transpose()?;
    let scope = |r: &audit_log::AuditLine| match &eval {
        Some(e) => suggest_yaml::scope_of(&e.cfg, e.select_record(r).profile),
        None => suggest::Scope {
            profile: None,
            policy: r.policy.clone(),
        },
    };
    let s = suggest::suggest(&a.audit.display().to_string(), &log, &scope);
    if let Some(f) = &a.diff {
        let cfg = crate::config::load(f).map_err(|e| OpsError::Config(e.to_string()))?;
        let d = suggest_diff::diff(&s, &cfg, &f.display().to_string());
        match a.format {
            SuggestFormat::Yaml => print!("{}", suggest_diff::render_text(&d)),
            SuggestFormat::Json => println!("{}", to_json(&d)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match (a.format, &a.config) {
        (SuggestFormat::Json, _) => println!("{}", to_json(&s)),
        (SuggestFormat::Yaml, None) => print!("{}", suggest_yaml::render_fragment(&s)),
        (SuggestFormat::Yaml, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| OpsError::Config(format!("reading {}: {e}", path.display())))?;
            let name = path.display().to_string();
            print!("{}", suggest_yaml::render_into(&s, &text, &name)?);
        }
    }
    Ok(ExitCode::SUCCESS)
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
