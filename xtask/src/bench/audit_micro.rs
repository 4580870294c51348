//! The audit record alone: `iron-agent bench-audit` in its three modes (`build`: build and drop;
//! `off`: through a sink at `log.level: warn`; `on`: every line written), natively for time per
//! record, and under valgrind for instructions (callgrind) and allocations (DHAT) per record.
//! The valgrind counts are deterministic, so they decide A/B comparisons on this shared machine;
//! each is the difference between a run of [`SMALL`] and one of [`LARGE`] records, which cancels
//! process start-up and the warm-up.
//!
//! `cargo xtask bench --audit-micro` runs only this (a few minutes, no load generator); the full
//! bench runs it as part of the audit pair. Results: `bench-results/audit-micro.json`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::servers::CPU_PROXY;
use crate::children::Guard;

const MODES: [&str; 3] = ["build", "off", "on"];
/// Records per native run.
pub const NATIVE: u64 = 200_000;
/// Record counts of the two valgrind runs whose difference is measured.
const SMALL: u64 = 2_000;
const LARGE: u64 = 12_000;
const NATIVE_TIMEOUT: Duration = Duration::from_secs(120);
const VALGRIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `bin bench-audit` (optionally under `wrapper`), stderr (the records) to a file in
/// `workdir`; returns its JSON result line.
fn bench_audit(
    wrapper: Option<Command>,
    bin: &Path,
    workdir: &Path,
    mode: &str,
    records: u64,
    timeout: Duration,
) -> Result<Value> {
    let log = workdir.join(format!("bench-audit-{mode}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = wrapper.unwrap_or_else(|| {
        let mut c = Command::new("taskset");
        c.args(["-c", CPU_PROXY]);
        c
    });
    cmd.arg(bin).args([
        "bench-audit",
        "--records",
        &records.to_string(),
        "--mode",
        mode,
    ]);
    let mut g = Guard::spawn_with_stderr("iron-agent bench-audit", cmd, file.into())?;
    let status = g.wait_bounded(timeout)?;
    let out = g.remaining_stdout();
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        bail!("bench-audit --mode {mode} failed ({status})");
    }
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("cpu_us_per_record").is_some())
        .context("bench-audit printed no result")
}

/// The number after `label` in a valgrind log (`==1== Collected : 1,234`).
fn log_number(log: &str, label: &str, nth: usize) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(label))?;
    let rest = &line[line.find(label)? + label.len()..];
    rest.split(|c: char| !(c.is_ascii_digit() || c == ','))
        .filter(|s| s.chars().any(|c| c.is_ascii_digit()))
        .nth(nth)
        .and_then(|n| n.replace(',', "").parse().ok())
}

/// `(instructions)` or `(bytes, blocks)` of one run under `tool`.
fn valgrind_counts(
    tool: &str,
    bin: &Path,
    workdir: &Path,
    mode: &str,
    records: u64,
) -> Result<Vec<f64>> {
    let log_path = workdir.join(format!("valgrind-{tool}-{mode}-{records}.log"));
    let out_path = workdir.join(format!("valgrind-{tool}.out"));
    let mut vg = Command::new("valgrind");
    vg.arg(format!("--tool={tool}"))
        .arg(format!("--log-file={}", log_path.display()));
    match tool {
        "callgrind" => vg.arg(format!("--callgrind-out-file={}", out_path.display())),
        _ => vg.arg(format!("--dhat-out-file={}", out_path.display())),
    };
    bench_audit(Some(vg), bin, workdir, mode, records, VALGRIND_TIMEOUT)?;
    let log = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&out_path);
    let parsed = match tool {
        "callgrind" => vec![log_number(&log, "Collected :", 0)],
        // `Total:     1,234 bytes in 56 blocks`
        _ => vec![log_number(&log, "Total:", 0), log_number(&log, "Total:", 1)],
    };
    parsed
        .into_iter()
        .collect::<Option<Vec<f64>>>()
        .with_context(|| format!("no totals in the {tool} log:\n{log}"))
}

/// Per-record counts of one mode: the difference between a [`LARGE`] and a [`SMALL`] run.
fn counted(bin: &Path, workdir: &Path, mode: &str) -> Result<Value> {
    let per = |a: f64, b: f64| (b - a) / (LARGE - SMALL) as f64;
    eprintln!("==> audit record alone: {mode}, callgrind");
    let i0 = valgrind_counts("callgrind", bin, workdir, mode, SMALL)?;
    let i1 = valgrind_counts("callgrind", bin, workdir, mode, LARGE)?;
    eprintln!("==> audit record alone: {mode}, dhat");
    let a0 = valgrind_counts("dhat", bin, workdir, mode, SMALL)?;
    let a1 = valgrind_counts("dhat", bin, workdir, mode, LARGE)?;
    Ok(json!({
        "instructions_per_record": per(i0[0], i1[0]),
        "allocations_per_record": per(a0[1], a1[1]),
        "bytes_allocated_per_record": per(a0[0], a1[0]),
    }))
}

fn valgrind_present() -> bool {
    crate::cmd::succeeds(Command::new("valgrind").arg("--version"))
}

/// Every mode natively and (when valgrind is installed) counted.
pub fn run(bin: &Path, workdir: &Path) -> Result<Value> {
    let mut native = serde_json::Map::new();
    for mode in MODES {
        eprintln!("==> audit record alone: {mode}, {NATIVE} records, native");
        let v = bench_audit(None, bin, workdir, mode, NATIVE, NATIVE_TIMEOUT)?;
        native.insert(mode.to_owned(), v);
    }
    let mut counts = serde_json::Map::new();
    if valgrind_present() {
        for mode in MODES {
            counts.insert(mode.to_owned(), counted(bin, workdir, mode)?);
        }
    } else {
        eprintln!(
            "==> valgrind not found (`cargo xtask setup` installs it): no instruction counts"
        );
    }
    let diff = |a: &str, b: &str, key: &str| -> Option<f64> {
        Some(counts.get(b)?.get(key)?.as_f64()? - counts.get(a)?.get(key)?.as_f64()?)
    };
    let on_minus_off = json!({
        "cpu_us_per_record": native["on"]["cpu_us_per_record"].as_f64().zip(native["off"]["cpu_us_per_record"].as_f64()).map(|(a, b)| a - b),
        "instructions_per_record": diff("off", "on", "instructions_per_record"),
        "allocations_per_record": diff("off", "on", "allocations_per_record"),
    });
    Ok(json!({
        "native": native,
        "counted": if counts.is_empty() { Value::Null } else { Value::Object(counts) },
        "counted_records": [SMALL, LARGE],
        "on_minus_off": on_minus_off,
    }))
}

/// One line per mode for the report.
pub fn print(v: &Value) {
    println!("audit record alone (iron-agent bench-audit; counts under valgrind, deterministic)");
    println!(
        "  {:<6} {:>14} {:>14} {:>12} {:>12} {:>10}",
        "mode", "instr/record", "allocs/record", "bytes/record", "caller µs", "CPU µs"
    );
    for mode in MODES {
        let c = &v["counted"][mode];
        let n = &v["native"][mode];
        let f = |x: &Value, d: usize| x.as_f64().map_or("-".to_owned(), |x| format!("{x:.d$}"));
        println!(
            "  {:<6} {:>14} {:>14} {:>12} {:>12} {:>10}",
            mode,
            f(&c["instructions_per_record"], 0),
            f(&c["allocations_per_record"], 2),
            f(&c["bytes_allocated_per_record"], 0),
            f(&n["caller_us_per_record"], 3),
            f(&n["cpu_us_per_record"], 3),
        );
    }
    println!();
}

/// `cargo xtask bench --audit-micro`: only this, written to `bench-results/audit-micro.json`.
pub fn run_alone(bin: &Path, workdir: &Path, out_dir: &Path) -> Result<()> {
    let v = run(bin, workdir)?;
    print(&v);
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("audit-micro.json");
    let text = serde_json::to_string_pretty(&json!({ "binary": bin, "audit_micro": v }))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("raw numbers: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_number;

    #[test]
    fn reads_valgrind_totals() {
        let cg = "==12== Events    : Ir\n==12== Collected : 1,234,567\n";
        assert_eq!(log_number(cg, "Collected :", 0), Some(1_234_567.0));
        let dhat = "==7== Total:     12,345 bytes in 678 blocks\n";
        assert_eq!(log_number(dhat, "Total:", 0), Some(12_345.0));
        assert_eq!(log_number(dhat, "Total:", 1), Some(678.0));
        assert_eq!(log_number("nothing", "Total:", 0), None);
    }
}
