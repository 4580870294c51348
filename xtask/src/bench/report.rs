//! The results table, the target checks and bench-results/latest.json.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{HopResults, Measured, oha::LoadResult};

pub struct Report {
    pub run_seconds: f64,
    pub warmup_seconds: f64,
    pub small_conns: u32,
    pub large_conns: u32,
    pub other_conns: u32,
    pub direct: Result<HopResults, String>,
    pub relay: Result<HopResults, String>,
    pub agent: Result<HopResults, String>,
    pub leaf_mint_us: Result<f64, String>,
    /// Keep-alive with the audit log on vs off, and the record alone.
    pub audit: Result<super::audit::AuditPair, String>,
    /// /proc/loadavg before the first run: other work on the machine skews every number.
    pub loadavg_before: String,
}

/// A bench target: `value` compared against `limit`.
struct Target {
    what: String,
    value: Option<f64>,
    at_least: bool,
    limit: f64,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match self.value {
            None => "n/a ",
            Some(v) if v.is_nan() => "n/a ",
            Some(v)
                if (self.at_least && v >= self.limit) || (!self.at_least && v <= self.limit) =>
            {
                "PASS"
            }
            Some(_) => "MISS",
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_owned(),
    }
}

/// Pooled CPU per request over several runs (e.g. both keep-alive runs).
fn pooled_cpu_per_request(runs: &[&Measured]) -> Option<f64> {
    let mut cpu = 0.0;
    let mut ok = 0.0;
    for r in runs {
        cpu += r.cpu_us? as f64;
        ok += r.load.ok as f64;
    }
    (ok > 0.0).then(|| cpu / ok)
}

const LABEL: usize = 36;
const COL: usize = 12;

impl Report {
    fn hops(&self) -> [(&'static str, Option<&HopResults>); 3] {
        [
            ("direct", self.direct.as_ref().ok()),
            ("relay", self.relay.as_ref().ok()),
            ("agent", self.agent.as_ref().ok()),
        ]
    }

    pub fn print(&self) {
        let [(_, d), (_, r), (_, a)] = self.hops();
        println!();
        println!(
            "iron-agent bench: HTTP/1.1 over TLS, {:.1} s per run after a {:.1} s warm-up per hop",
            self.run_seconds, self.warmup_seconds
        );
        println!("pinning: oha + relay + agent on CPU 0, origin on CPU 1 (taskset)");
        println!(
            "load average before the runs: {} (other work on these 2 CPUs adds noise)",
            self.loadavg_before
        );
        println!(
            "TLS: the client verifies certificates (oha --cacert: origin CA for direct/relay, agent CA for agent; no --insecure)"
        );
        println!();

        // Throughput and latency: direct / relay / agent with ratios to direct.
        println!(
            "{:<LABEL$}{:>COL$}{:>COL$}{:>COL$}{:>COL$}{:>COL$}",
            "client view", "direct", "relay", "agent", "relay/dir", "agent/dir"
        );
        let row = |label: String, f: &dyn Fn(&HopResults) -> f64, decimals: usize| {
            let (dv, rv, av) = (d.map(f), r.map(f), a.map(f));
            println!(
                "{label:<LABEL$}{:>COL$}{:>COL$}{:>COL$}{:>COL$}{:>COL$}",
                fmt(dv, decimals),
                fmt(rv, decimals),
                fmt(av, decimals),
                fmt(ratio(rv, dv), 2),
                fmt(ratio(av, dv), 2),
            );
        };
        fn ka16(h: &HopResults) -> &Measured {
            &h.keepalive_16
        }
        fn ka64(h: &HopResults) -> &Measured {
            &h.keepalive_64
        }
        for (name, conns, pick) in [
            (
                "keep-alive",
                self.small_conns,
                ka16 as fn(&HopResults) -> &Measured,
            ),
            ("keep-alive", self.large_conns, ka64),
        ] {
            row(
                format!("{name} c={conns}  req/s"),
                &|h| pick(h).load.ok_per_sec,
                0,
            );
            row(
                format!("{name} c={conns}  p50 ms"),
                &|h| pick(h).load.p50_ms,
                3,
            );
            row(
                format!("{name} c={conns}  p99 ms"),
                &|h| pick(h).load.p99_ms,
                3,
            );
        }
        row(
            format!("new TLS conn/req c={}  req/s", self.other_conns),
            &|h| h.new_conn.load.ok_per_sec,
            0,
        );
        row(
            format!("new TLS conn/req c={}  p99 ms", self.other_conns),
            &|h| h.new_conn.load.p99_ms,
            3,
        );
        row(
            format!("1 MiB download c={}  MiB/s", self.other_conns),
            &|h| h.mib.load.mib_per_sec,
            1,
        );
        println!();

        // Process cost: relay vs agent.
        println!(
            "{:<LABEL$}{:>COL$}{:>COL$}{:>COL$}",
            "process cost (utime+stime)", "relay", "agent", "agent/relay"
        );
        let cost = |label: String, f: &dyn Fn(&HopResults) -> Option<f64>, decimals: usize| {
            let (rv, av) = (r.and_then(f), a.and_then(f));
            println!(
                "{label:<LABEL$}{:>COL$}{:>COL$}{:>COL$}",
                fmt(rv, decimals),
                fmt(av, decimals),
                fmt(ratio(av, rv), 2)
            );
        };
        cost(
            format!("CPU µs/req keep-alive c={}", self.small_conns),
            &|h| h.keepalive_16.cpu_us_per_request(),
            1,
        );
        cost(
            format!("CPU µs/req keep-alive c={}", self.large_conns),
            &|h| h.keepalive_64.cpu_us_per_request(),
            1,
        );
        cost(
            format!("CPU µs/req new TLS conn c={}", self.other_conns),
            &|h| h.new_conn.cpu_us_per_request(),
            1,
        );
        cost(
            format!("CPU µs/MiB 1 MiB c={}", self.other_conns),
            &|h| h.mib.cpu_us_per_mib(),
            1,
        );
        cost(
            format!("peak RSS MiB (VmHWM after c={})", self.large_conns),
            &|h| h.peak_rss_kib.map(|k| k as f64 / 1024.0),
            1,
        );
        let mint = match &self.leaf_mint_us {
            Ok(us) => format!("{us:.0}"),
            Err(_) => "n/a".to_owned(),
        };
        println!(
            "{:<LABEL$}{:>COL$}{:>COL$}",
            "leaf mint, cache miss, mean µs", "", mint
        );
        println!();

        match &self.audit {
            Ok(p) => p.print(),
            Err(e) => println!("audit log on vs off: FAILED: {e}\n"),
        }

        println!("targets");
        for t in self.targets() {
            let value = fmt(t.value, 2);
            let op = if t.at_least { ">=" } else { "<=" };
            println!(
                "  {}  {:<54}{:>9}  {op} {}",
                t.verdict(),
                t.what,
                value,
                t.limit
            );
        }

        let mut notes = Vec::new();
        for (name, res) in [
            ("direct", &self.direct),
            ("relay", &self.relay),
            ("agent", &self.agent),
        ] {
            match res {
                Err(e) => notes.push(format!("{name}: FAILED: {e}")),
                Ok(h) => {
                    for (run, m) in [
                        ("keep-alive c=16", &h.keepalive_16),
                        ("keep-alive c=64", &h.keepalive_64),
                        ("new conn", &h.new_conn),
                        ("1 MiB", &h.mib),
                    ] {
                        if m.load.failures > 0 {
                            notes.push(format!(
                                "{name} {run}: failed requests: {}",
                                m.load.failure_kinds.join(", ")
                            ));
                        }
                    }
                }
            }
        }
        if let Err(e) = &self.leaf_mint_us {
            notes.push(format!("leaf mint: n/a ({e})"));
        }
        if !notes.is_empty() {
            println!();
            for n in notes {
                println!("note: {n}");
            }
        }
        println!();
    }

    fn targets(&self) -> Vec<Target> {
        let [(_, d), (_, r), (_, a)] = self.hops();
        let both_ka = |h: &HopResults| pooled_cpu_per_request(&[&h.keepalive_16, &h.keepalive_64]);
        vec![
            Target {
                what: format!("keep-alive c={} req/s, agent/direct", self.small_conns),
                value: ratio(
                    a.map(|h| h.keepalive_16.load.ok_per_sec),
                    d.map(|h| h.keepalive_16.load.ok_per_sec),
                ),
                at_least: true,
                limit: 0.65,
            },
            Target {
                what: format!("keep-alive c={} req/s, agent/direct", self.large_conns),
                value: ratio(
                    a.map(|h| h.keepalive_64.load.ok_per_sec),
                    d.map(|h| h.keepalive_64.load.ok_per_sec),
                ),
                at_least: true,
                limit: 0.65,
            },
            Target {
                what: "CPU per keep-alive request (both runs), agent/relay".to_owned(),
                value: ratio(a.and_then(both_ka), r.and_then(both_ka)),
                at_least: false,
                limit: 2.0,
            },
            Target {
                what: "CPU per new TLS connection, agent/relay".to_owned(),
                value: ratio(
                    a.and_then(|h| h.new_conn.cpu_us_per_request()),
                    r.and_then(|h| h.new_conn.cpu_us_per_request()),
                ),
                at_least: false,
                limit: 3.5,
            },
            Target {
                what: "CPU per MiB, agent/relay".to_owned(),
                value: ratio(
                    a.and_then(|h| h.mib.cpu_us_per_mib()),
                    r.and_then(|h| h.mib.cpu_us_per_mib()),
                ),
                at_least: false,
                limit: 1.8,
            },
            Target {
                what: format!("p99 at c={}, agent/direct", self.small_conns),
                value: ratio(
                    a.map(|h| h.keepalive_16.load.p99_ms),
                    d.map(|h| h.keepalive_16.load.p99_ms),
                ),
                at_least: false,
                limit: 2.0,
            },
            Target {
                what: format!("agent peak RSS MiB at c={}", self.large_conns),
                value: a.and_then(|h| h.peak_rss_kib).map(|k| k as f64 / 1024.0),
                at_least: false,
                limit: 32.0,
            },
            Target {
                what: "audit log CPU µs/req keep-alive, on minus off".to_owned(),
                value: self.audit.as_ref().ok().and_then(|p| p.delta()),
                at_least: false,
                limit: 3.0,
            },
            Target {
                what: "leaf mint ms (cache miss)".to_owned(),
                value: self.leaf_mint_us.as_ref().ok().map(|us| us / 1000.0),
                at_least: false,
                limit: 2.0,
            },
        ]
    }

    pub fn write_json(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Results are per machine; keep them out of git without touching the repo's .gitignore.
        let _ = std::fs::write(dir.join(".gitignore"), "*\n");
        let hop = |res: &Result<HopResults, String>| match res {
            Err(e) => json!({ "error": e }),
            Ok(h) => json!({
                "keepalive_16": measured_json(&h.keepalive_16),
                "keepalive_64": measured_json(&h.keepalive_64),
                "new_conn": measured_json(&h.new_conn),
                "download_1mib": measured_json(&h.mib),
                "peak_rss_kib": h.peak_rss_kib,
            }),
        };
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| {
                json!({
                    "target": t.what,
                    "value": t.value.filter(|v| v.is_finite()),
                    "limit": t.limit,
                    "at_least": t.at_least,
                    "verdict": t.verdict().trim(),
                })
            })
            .collect();
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let doc = json!({
            "unix_time": unix_time,
            "loadavg_before": self.loadavg_before,
            "run_seconds": self.run_seconds,
            "warmup_seconds": self.warmup_seconds,
            "connections": { "small": self.small_conns, "large": self.large_conns, "other": self.other_conns },
            "pinning": { "cpu0": ["oha", "relay", "agent"], "cpu1": ["origin"] },
            "client_tls": "verify with --cacert (origin CA for direct/relay, agent CA for agent)",
            "direct": hop(&self.direct),
            "relay": hop(&self.relay),
            "agent": hop(&self.agent),
            "audit": match &self.audit { Ok(p) => p.to_json(measured_json), Err(e) => json!({ "error": e }) },
            "leaf_mint_mean_us": match &self.leaf_mint_us { Ok(v) => json!(v), Err(e) => json!({ "error": e }) },
            "targets": targets,
        });
        let path = dir.join("latest.json");
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn load_json(l: &LoadResult) -> Value {
    json!({
        "seconds": l.seconds,
        "ok_requests": l.ok,
        "ok_per_sec": l.ok_per_sec,
        "bytes": l.bytes,
        "mib_per_sec": l.mib_per_sec,
        "p50_ms": finite(l.p50_ms),
        "p99_ms": finite(l.p99_ms),
        "failed_requests": l.failures,
        "failures": l.failure_kinds,
    })
}

fn measured_json(m: &Measured) -> Value {
    json!({
        "load": load_json(&m.load),
        "cpu_us": m.cpu_us,
        "cpu_us_per_request": m.cpu_us_per_request(),
        "cpu_us_per_mib": m.cpu_us_per_mib(),
    })
}
