//! The audit pair: the same agent build at keep-alive c=16 with the audit log off
//! (`log.level: warn`, records counted only) and on (`info`, every record written to a file),
//! alternated so drift on this shared machine hits both sides; plus `iron-agent bench-audit`, the
//! record alone. Issue 13's target: audit on minus audit off ≤ 3 µs of CPU per request.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use super::servers::{self, Agent, Audit};
use super::{Ctx, Hop, Measured, SMALL_CONNS};

/// Alternating off/on rounds.
const ROUNDS: usize = 2;

pub struct AuditPair {
    pub off: Vec<Measured>,
    pub on: Vec<Measured>,
    /// Audit lines the audit-on agent wrote, and requests it answered (warm-up included).
    pub lines_written: Option<u64>,
    pub answered: u64,
    pub micro: Result<Value, String>,
}

fn pooled(runs: &[Measured]) -> Option<f64> {
    let (mut cpu, mut ok) = (0.0, 0.0);
    for r in runs {
        cpu += r.cpu_us? as f64;
        ok += r.load.ok as f64;
    }
    (ok > 0.0).then(|| cpu / ok)
}

impl AuditPair {
    pub fn off_cpu(&self) -> Option<f64> {
        pooled(&self.off)
    }

    pub fn on_cpu(&self) -> Option<f64> {
        pooled(&self.on)
    }

    /// CPU µs per request the audit log costs.
    pub fn delta(&self) -> Option<f64> {
        Some(self.on_cpu()? - self.off_cpu()?)
    }

    fn req_per_sec(runs: &[Measured]) -> f64 {
        runs.iter().map(|m| m.load.ok_per_sec).sum::<f64>() / runs.len().max(1) as f64
    }

    pub fn print(&self) {
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "audit log on vs off (same build, keep-alive c={SMALL_CONNS}, {ROUNDS} alternating rounds)"
        );
        println!(
            "  CPU µs/req   off {:>8}   on {:>8}   on-off {:>8}   (target on-off <= 3.0)",
            f(self.off_cpu()),
            f(self.on_cpu()),
            f(self.delta())
        );
        println!(
            "  req/s        off {:>8.0}   on {:>8.0}",
            Self::req_per_sec(&self.off),
            Self::req_per_sec(&self.on)
        );
        println!(
            "  audit lines written {} for {} requests answered",
            self.lines_written.map_or("-".to_owned(), |n| n.to_string()),
            self.answered
        );
        println!();
        match &self.micro {
            Ok(v) => super::audit_micro::print(v),
            Err(e) => println!("audit record alone (bench-audit): n/a ({e})\n"),
        }
    }

    pub fn to_json(&self, measured: impl Fn(&Measured) -> Value) -> Value {
        json!({
            "keepalive_16_off": self.off.iter().map(&measured).collect::<Vec<_>>(),
            "keepalive_16_on": self.on.iter().map(&measured).collect::<Vec<_>>(),
            "cpu_us_per_request_off": self.off_cpu(),
            "cpu_us_per_request_on": self.on_cpu(),
            "cpu_us_per_request_on_minus_off": self.delta(),
            "audit_lines_written": self.lines_written,
            "requests_answered": self.answered,
            "micro": match &self.micro { Ok(v) => v.clone(), Err(e) => json!({ "error": e }) },
        })
    }
}

fn hop<'a>(name: &'static str, a: &'a Agent) -> Hop<'a> {
    Hop {
        name,
        via: a.https,
        ca_cert: &a.ca_cert,
        pid: Some(a.guard.pid()),
    }
}

/// Runs the pair against `off` (the main bench's agent, audit off) and a second agent with the
/// audit log on.
pub fn run(
    ctx: &Ctx<'_>,
    off: &Agent,
    bin: &Path,
    workdir: &Path,
    origin_ca: &Path,
) -> Result<AuditPair> {
    let on = servers::start_agent(bin, workdir, origin_ca, Audit::On)?;
    let url = format!("https://localhost:{}/small", ctx.origin_port);
    let (off_hop, on_hop) = (hop("agent audit off", off), hop("agent audit on", &on));
    eprintln!("==> audit pair: warm-up");
    let warm = ctx
        .load(&on_hop, &url, SMALL_CONNS, true, ctx.warmup)
        .run()?;
    let mut answered = warm.ok + warm.failures;
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        eprintln!("==> audit pair round {round}/{ROUNDS}: audit off, then on");
        offs.push(ctx.measure(&off_hop, &url, SMALL_CONNS, true)?);
        let m = ctx.measure(&on_hop, &url, SMALL_CONNS, true)?;
        answered += m.load.ok + m.load.failures;
        ons.push(m);
    }
    drop(on); // SIGTERM: the agent flushes its audit log before it exits
    eprintln!("==> audit record alone (iron-agent bench-audit)");
    Ok(AuditPair {
        off: offs,
        on: ons,
        lines_written: servers::audit_lines_written(workdir),
        answered,
        micro: super::audit_micro::run(bin, workdir).map_err(|e| format!("{e:#}")),
    })
}
