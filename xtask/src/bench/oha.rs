//! Installing and running the load generator (oha) and parsing its JSON report.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    children::Guard,
    cmd::{cargo, run_streamed, succeeds},
};

/// oha's error for requests cut off when the timed run ends; not a failure of the target.
const DEADLINE_ERROR: &str = "aborted due to deadline";

/// Path of a working oha, installing it with `cargo install oha --locked` when absent.
pub fn ensure_installed() -> Result<PathBuf> {
    if let Some(path) = find() {
        return Ok(path);
    }
    eprintln!(
        "==> oha (the load generator) is not installed; installing it with cargo (takes a few minutes once)"
    );
    run_streamed(cargo().args(["install", "oha", "--locked"]))?;
    find().context(
        "`cargo install oha` succeeded but no working oha is on PATH or in $CARGO_HOME/bin",
    )
}

fn find() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("oha")).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin").join("oha"));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file() && succeeds(Command::new(c).arg("--version")))
}

/// One oha invocation.
pub struct Load<'a> {
    pub oha: &'a Path,
    pub url: &'a str,
    /// `host:port:target_host:target_port`: keeps the URL (Host header, SNI) while the TCP
    /// connection goes to the relay or agent.
    pub connect_to: Option<String>,
    pub ca_cert: &'a Path,
    pub connections: u32,
    pub duration: Duration,
    pub keepalive: bool,
    pub cpu: &'a str,
}

#[derive(Clone, Debug)]
pub struct LoadResult {
    pub seconds: f64,
    /// Responses with status 200.
    pub ok: u64,
    pub ok_per_sec: f64,
    pub bytes: u64,
    pub mib_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-200 responses and transport errors (deadline aborts excluded), with their reasons.
    pub failures: u64,
    pub failure_kinds: Vec<String>,
}

impl Load<'_> {
    pub fn run(&self) -> Result<LoadResult> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", self.cpu])
            .arg(self.oha)
            .args(["--no-tui", "--output-format", "json"])
            // Pinned to one CPU: more runtime threads would only add context switches.
            .args(["--worker-threads", "1"])
            .arg("-c")
            .arg(self.connections.to_string())
            .arg("-z")
            .arg(format!("{}ms", self.duration.as_millis()))
            .arg("--cacert")
            .arg(self.ca_cert);
        if !self.keepalive {
            cmd.arg("--disable-keepalive");
        }
        if let Some(c) = &self.connect_to {
            cmd.args(["--connect-to", c]);
        }
        cmd.arg(self.url);

        let mut child = Guard::spawn("oha", cmd)?;
        let status = child.wait_bounded(self.duration + Duration::from_secs(30))?;
        let stdout = child.remaining_stdout();
        if !status.success() {
            bail!("oha failed ({status}): {}", child.stderr_tail.text());
        }
        parse(&stdout).with_context(|| format!("parsing oha's JSON report: {}", truncate(&stdout)))
    }
}

fn truncate(s: &str) -> &str {
    s.get(..400).unwrap_or(s)
}

fn parse(json: &str) -> Result<LoadResult> {
    let v: Value = serde_json::from_str(json)?;
    let num = |ptr: &str| -> Result<f64> {
        v.pointer(ptr)
            .and_then(Value::as_f64)
            .with_context(|| format!("missing number {ptr}"))
    };
    let seconds = num("/summary/total")?;
    let bytes = v
        .pointer("/summary/totalData")
        .and_then(Value::as_u64)
        .unwrap_or(0);

    let mut ok = 0;
    let mut failures = 0;
    let mut failure_kinds = Vec::new();
    if let Some(codes) = v.get("statusCodeDistribution").and_then(Value::as_object) {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            if code == "200" {
                ok += n;
            } else {
                failures += n;
                failure_kinds.push(format!("{n} x HTTP {code}"));
            }
        }
    }
    if let Some(errors) = v.get("errorDistribution").and_then(Value::as_object) {
        for (err, n) in errors {
            if err == DEADLINE_ERROR {
                continue;
            }
            let n = n.as_u64().unwrap_or(0);
            failures += n;
            failure_kinds.push(format!("{n} x {err}"));
        }
    }

    let per_sec = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
    // Percentiles are in seconds; they are absent (null) when nothing completed.
    let pct = |p: &str| {
        v.pointer(&format!("/latencyPercentiles/{p}"))
            .and_then(Value::as_f64)
            .map_or(f64::NAN, |s| s * 1000.0)
    };
    Ok(LoadResult {
        seconds,
        ok,
        ok_per_sec: per_sec(ok as f64),
        bytes,
        mib_per_sec: per_sec(bytes as f64 / super::MIB),
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        failures,
        failure_kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oha_json_and_ignores_deadline_aborts() {
        let json = r#"{
            "summary": {"successRate": 1.0, "total": 2.0, "requestsPerSec": 101.0, "totalData": 20000},
            "latencyPercentiles": {"p50": 0.001, "p99": 0.004},
            "statusCodeDistribution": {"200": 200, "502": 2},
            "errorDistribution": {"aborted due to deadline": 16, "connection refused": 3}
        }"#;
        let r = parse(json).unwrap();
        assert_eq!(r.ok, 200);
        assert_eq!(r.failures, 5);
        assert!((r.ok_per_sec - 100.0).abs() < 1e-9);
        assert!((r.p50_ms - 1.0).abs() < 1e-9);
        assert!((r.p99_ms - 4.0).abs() < 1e-9);
        assert_eq!(r.failure_kinds.len(), 2);
    }

    #[test]
    fn missing_percentiles_are_nan() {
        let json = r#"{"summary": {"total": 1.0, "totalData": 0},
            "latencyPercentiles": {"p50": null, "p99": null},
            "statusCodeDistribution": {}, "errorDistribution": {}}"#;
        let r = parse(json).unwrap();
        assert_eq!(r.ok, 0);
        assert!(r.p99_ms.is_nan());
    }
}
