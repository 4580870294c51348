//! `iron-agent bench-audit`: the cost of one audit record alone — building it the way the
//! request path does, serialising it and writing it through the sink — without any network.
//! `cargo xtask bench` runs it natively (time per record) and under valgrind (instructions and
//! allocations per record, deterministic on a shared machine).
//!
//! Modes, so a difference isolates one part: `build` builds and drops records (no sink),
//! `off` hands them to a sink whose level filters them out (counters and metrics only: the
//! agent at `log.level: warn`), `on` writes every line (`log.level: info`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Action, AuditRecord, AuditSink, Trace, TraceAction};
use crate::config::LogLevel;

/// What the records go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Build and drop: no sink.
    Build,
    /// Through a sink that counts but does not write (`log.level: warn`).
    Off,
    /// Through a sink that writes every line to stderr (`log.level: info`).
    On,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Build => "build",
            Mode::Off => "off",
            Mode::On => "on",
        }
    }
}

/// What one run measured, per record.
#[derive(Debug, Clone, Copy)]
pub struct AuditBench {
    pub mode: Mode,
    pub records: u64,
    /// Wall time of the calling thread (the request path's share).
    pub caller_us: f64,
    /// CPU of the whole process, writer thread included, until every record is written.
    pub cpu_us: f64,
}

impl AuditBench {
    pub fn to_json(self) -> String {
        json!({
            "mode": self.mode.as_str(),
            "records": self.records,
            "caller_us_per_record": self.caller_us,
            "cpu_us_per_record": self.cpu_us,
        })
        .to_string()
    }
}

fn trace(name: &str, duration_ms: f64) -> Trace {
    Trace {
        name: name.to_string(),
        action: TraceAction::Allow,
        duration_ms,
        error: None,
        annotations: serde_json::Map::new(),
    }
}

/// A record as the keep-alive path fills it. Even records: an allowed GET through an
/// allowlist-only pipeline (the bench's keep-alive case). Odd records: an allowed POST through
/// allowlist + secrets, with the secrets transform's `swapped` annotation (secret names and
/// locations, never values) and both phases' traces, as a credential-proxying request has.
pub fn build(i: u64) -> AuditRecord {
    let mut rec = AuditRecord {
        host: "api.example.com".to_string(),
        method: "GET".to_string(),
        path: "/v1/models".to_string(),
        action: Action::Allow,
        status_code: 200,
        duration_ms: 1.234,
        request_transforms: vec![trace("allowlist", 0.004)],
        remote_addr: "127.0.0.1:51234".to_string(),
        sni: "api.example.com".to_string(),
        mode: "mitm",
        protocol: "https",
        ..Default::default()
    };
    if i % 2 == 1 {
        rec.method = "POST".to_string();
        rec.path = "/v1/chat/completions".to_string();
        rec.duration_ms = 153.817;
        let mut secrets = trace("secrets", 0.021);
        secrets.annotations.insert(
            "swapped".into(),
            json!([{"secret": "OPENAI_API_KEY", "locations": ["header:Authorization"]}]),
        );
        rec.request_transforms.push(secrets);
        rec.response_transforms = vec![trace("allowlist", 0.0), trace("secrets", 0.001)];
    }
    rec
}

fn process_cpu_us() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e6 + tv.tv_usec() as f64;
        t(u.user_time()) + t(u.system_time())
    })
}

/// The sink a mode writes through (`None` for [`Mode::Build`]): stderr, as the agent's.
pub fn sink(mode: Mode) -> std::io::Result<Option<AuditSink>> {
    match mode {
        Mode::Build => Ok(None),
        Mode::Off => AuditSink::stderr(LogLevel::Warn, Default::default()).map(Some),
        Mode::On => AuditSink::stderr(LogLevel::Info, Default::default()).map(Some),
    }
}

/// Builds `records` records, hands them to `sink` (or drops them) and waits until they are all
/// written.
pub fn run(mode: Mode, sink: Option<&AuditSink>, records: u64) -> AuditBench {
    let records = records.max(1);
    let one = |i: u64| {
        let rec = std::hint::black_box(build(i));
        if let Some(s) = sink {
            s.write(rec);
        }
    };
    let flush = |timeout| {
        if let Some(s) = sink {
            s.flush(timeout);
        }
    };
    // Warm-up: buffers grown, code paged in.
    (0..records.min(1000)).for_each(one);
    flush(Duration::from_secs(30));
    let cpu0 = process_cpu_us();
    let start = Instant::now();
    (0..records).for_each(one);
    let caller = start.elapsed();
    flush(Duration::from_secs(60));
    let cpu = process_cpu_us() - cpu0;
    AuditBench {
        mode,
        records,
        caller_us: caller.as_secs_f64() * 1e6 / records as f64,
        cpu_us: cpu / records as f64,
    }
}
