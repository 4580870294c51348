//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) and runs
//! each for a fixed time, a few at a time, then prints one report line per target: executions
//! per second, coverage (libFuzzer's `cov` edges and `ft` features) and the outcome. A crash,
//! timeout or out-of-memory input is saved under `fuzz/artifacts/<target>/` and fails the run.
//! See docs/reliability.md.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::children::Guard;
use crate::cmd::{self, run_streamed};

/// Every target, in the order they run (the slowest-growing ones first).
pub const TARGETS: &[&str] = &[
    "http1_head",
    "config_yaml",
    "postgres_wire",
    "dns_request",
    "mcp_jsonrpc",
    "client_hello",
    "connect_head",
    "socks5",
    "template",
    "sigv4_scope",
];

/// What `cargo xtask test` runs: every target for this long, two at a time. With the build of
/// an already-compiled tree this keeps the stage within its ~6 minute budget on 2 cores
/// (10 targets / 2 at a time x 30 s = 2.5 min of fuzzing, plus the build).
pub const CI_SECONDS: u64 = 30;

#[derive(Args, Clone)]
pub struct FuzzArgs {
    /// Minutes per target.
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<u64>,
    /// Seconds per target (short runs); default 60 when neither is given.
    #[arg(long)]
    seconds: Option<u64>,
    /// Targets run at the same time (each uses one core).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Only these targets (repeatable); default: all.
    #[arg(long = "target")]
    targets: Vec<String>,
}

impl FuzzArgs {
    /// The short run of `cargo xtask test`.
    pub fn ci() -> Self {
        Self {
            minutes: None,
            seconds: Some(CI_SECONDS),
            jobs: 2,
            targets: Vec::new(),
        }
    }

    fn per_target(&self) -> Duration {
        match (self.minutes, self.seconds) {
            (Some(m), _) => Duration::from_secs(m * 60),
            (None, Some(s)) => Duration::from_secs(s),
            (None, None) => Duration::from_secs(60),
        }
    }
}

/// One target's figures, read from libFuzzer's output.
#[derive(Default)]
struct Report {
    target: String,
    secs: f64,
    execs: u64,
    execs_per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    /// `None` = no finding; else what libFuzzer found and where it saved the input.
    finding: Option<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let root = cmd::workspace_root()?;
    let fuzz_dir = root.join("fuzz");
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.targets.clone()
    };
    if let Some(t) = targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        bail!("unknown fuzz target `{t}` (known: {})", TARGETS.join(", "));
    }
    let built = Instant::now();
    build(&root)?;
    eprintln!(
        "==> fuzz targets built in {:.0} s",
        built.elapsed().as_secs_f64()
    );
    let bins = fuzz_dir.join("target/x86_64-unknown-linux-gnu/release");
    let reports = run_all(&fuzz_dir, &bins, &targets, args.per_target(), args.jobs)?;
    print_reports(&reports, args.per_target());
    let found: Vec<&Report> = reports.iter().filter(|r| r.finding.is_some()).collect();
    if !found.is_empty() {
        bail!(
            "{} fuzz target(s) found failing inputs; add each as a regression test in \
             agent/src/fuzzing/tests.rs and fix it",
            found.len()
        );
    }
    Ok(())
}

/// `cargo fuzz build` on nightly: no sanitizer (the agent is safe Rust: libFuzzer's coverage
/// and panics are what matter), 16 codegen units (build time over a few % of speed), and no
/// eBPF object (the targets never load one).
fn build(root: &Path) -> Result<()> {
    run_streamed(
        Command::new("rustup")
            .current_dir(root)
            .env("IRON_AGENT_SKIP_EBPF", "1")
            .env_remove("IRON_AGENT_REQUIRE_EBPF")
            .args(["run", "nightly", "cargo", "fuzz", "build"])
            .args(["--sanitizer", "none", "--codegen-units", "16"]),
    )
    .context("building the fuzz targets (needs nightly and cargo-fuzz: cargo xtask setup)")
}

fn run_all(
    fuzz_dir: &Path,
    bins: &Path,
    targets: &[String],
    per_target: Duration,
    jobs: usize,
) -> Result<Vec<Report>> {
    let logs = fuzz_dir.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut pending: Vec<&String> = targets.iter().rev().collect();
    let mut running: Vec<(String, Guard, Instant)> = Vec::new();
    let mut reports = Vec::new();
    // libFuzzer stops itself at -max_total_time; the bound only catches a wedged process.
    let bound = per_target + Duration::from_secs(120);
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < jobs.max(1) {
            let Some(t) = pending.pop() else { break };
            let guard = start(fuzz_dir, bins, &logs, t, per_target)?;
            running.push((t.clone(), guard, Instant::now()));
        }
        let mut i = 0;
        while i < running.len() {
            let (_, guard, started) = &mut running[i];
            let done = guard.exited().is_some() || started.elapsed() > bound;
            if done {
                let (t, mut guard, started) = running.swap_remove(i);
                let status = guard.wait_bounded(Duration::from_secs(5))?;
                let log =
                    std::fs::read_to_string(logs.join(format!("{t}.log"))).unwrap_or_default();
                let mut r = parse_log(&t, &log, status.success());
                r.secs = started.elapsed().as_secs_f64();
                eprintln!("==> fuzz {t}: {}", summary(&r));
                reports.push(r);
            } else {
                i += 1;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    reports.sort_by_key(|r| TARGETS.iter().position(|t| *t == r.target));
    Ok(reports)
}

/// Starts one target on its work corpus (`fuzz/target/corpus/<t>`, where new inputs go) and
/// the committed seeds (`fuzz/corpus/<t>`, read only).
fn start(
    fuzz_dir: &Path,
    bins: &Path,
    logs: &Path,
    target: &str,
    per_target: Duration,
) -> Result<Guard> {
    let work = fuzz_dir.join("target/corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    for d in [&work, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut c = Command::new(bins.join(target));
    c.arg(format!("-max_total_time={}", per_target.as_secs().max(1)))
        .arg("-timeout=20")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&work)
        .arg(fuzz_dir.join("corpus").join(target));
    eprintln!(
        "==> fuzz {target}: {} s (log {})",
        per_target.as_secs(),
        log_path.display()
    );
    Guard::spawn_with_stderr(target, c, Stdio::from(log))
}

/// Reads the last status line (`#N ... cov: C ft: F corp: K/...`), the final stats and any
/// finding out of libFuzzer's output.
fn parse_log(target: &str, log: &str, success: bool) -> Report {
    let mut r = Report {
        target: target.to_owned(),
        ..Report::default()
    };
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        let num: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        num.parse().ok()
    };
    for line in log.lines() {
        if line.starts_with('#') && line.contains(" cov: ") {
            r.cov = field(line, " cov:").unwrap_or(r.cov);
            r.ft = field(line, " ft:").unwrap_or(r.ft);
            r.corpus = field(line, " corp:").unwrap_or(r.corpus);
        }
        if let Some(v) = field(line, "stat::number_of_executed_units:") {
            r.execs = v;
        }
        if let Some(v) = field(line, "stat::average_exec_per_sec:") {
            r.execs_per_sec = v;
        }
    }
    if !success {
        let kind = if log.contains("ALARM: working on the last Unit") {
            "timeout"
        } else if log.contains("out-of-memory") {
            "out of memory"
        } else {
            "crash"
        };
        let saved = log
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("no input saved; see the log");
        r.finding = Some(format!("{kind}: {saved}"));
    }
    r
}

fn summary(r: &Report) -> String {
    format!(
        "{} execs ({}/s), cov {} ft {}, corpus {}, {}",
        r.execs,
        r.execs_per_sec,
        r.cov,
        r.ft,
        r.corpus,
        r.finding.as_deref().unwrap_or("no crashes")
    )
}

fn print_reports(reports: &[Report], per_target: Duration) {
    println!(
        "\nfuzz report: {} s per target\n{:<14} {:>7} {:>11} {:>8} {:>7} {:>7} {:>7}  result",
        per_target.as_secs(),
        "target",
        "secs",
        "execs",
        "exec/s",
        "cov",
        "ft",
        "corpus"
    );
    for r in reports {
        println!(
            "{:<14} {:>7.0} {:>11} {:>8} {:>7} {:>7} {:>7}  {}",
            r.target,
            r.secs,
            r.execs,
            r.execs_per_sec,
            r.cov,
            r.ft,
            r.corpus,
            r.finding.as_deref().unwrap_or("0 crashes")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_seeds_and_a_bin() {
        let root = cmd::workspace_root().unwrap();
        for t in TARGETS {
            let n = std::fs::read_dir(root.join("fuzz/corpus").join(t))
                .unwrap()
                .count();
            assert!(n > 0, "{t} has no seeds");
            assert!(root.join(format!("fuzz/fuzz_targets/{t}.rs")).is_file());
        }
    }

    #[test]
    fn reads_libfuzzer_output() {
        let log = "INFO: seed\n#2\tINITED cov: 10 ft: 12 corp: 3/30b exec/s: 0\n\
                   #4096\tpulse  cov: 200 ft: 350 corp: 40/1Kb lim: 4 exec/s: 2048 rss: 60Mb\n\
                   #9000\tDONE   cov: 210 ft: 360 corp: 42/1Kb lim: 4 exec/s: 3000 rss: 61Mb\n\
                   stat::number_of_executed_units: 9000\nstat::average_exec_per_sec:     3000\n";
        let r = parse_log("t", log, true);
        assert_eq!((r.cov, r.ft, r.corpus), (210, 360, 42));
        assert_eq!((r.execs, r.execs_per_sec), (9000, 3000));
        assert!(r.finding.is_none());
        let crash = "==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='a/'; Test unit written to a/crash-abc\n";
        let r = parse_log("t", crash, false);
        assert_eq!(r.finding.as_deref(), Some("crash: a/crash-abc"));
    }
}
