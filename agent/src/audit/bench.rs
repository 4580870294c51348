//! `iron-agent bench-audit`: the cost of one audit record alone — building it the way the
//! request path does, serialising it and writing it through the sink — without any network.
//! `cargo xtask bench` runs it; `cargo bench -p iron-agent --bench audit` too.

use std::time::Instant;

use serde_json::json;

use super::{Action, AuditRecord, AuditSink, Trace, TraceAction};

/// What one run measured, per record.
#[derive(Debug, Clone, Copy)]
pub struct AuditBench {
    pub records: u64,
    /// Wall time of the calling thread (the request path's share).
    pub caller_us: f64,
    /// CPU of the whole process, writer thread included, until every record is written.
    pub cpu_us: f64,
}

impl AuditBench {
    pub fn to_json(self) -> String {
        json!({
            "records": self.records,
            "caller_us_per_record": self.caller_us,
            "cpu_us_per_record": self.cpu_us,
        })
        .to_string()
    }
}

/// A record as the keep-alive path fills it: an allowed GET through an allowlist-only
/// pipeline, plus one annotation (most credential transforms add a few).
fn build(i: u64) -> AuditRecord {
    let mut trace = Trace {
        name: "allowlist".to_string(),
        action: TraceAction::Allow,
        duration_ms: 0.004,
        error: None,
        annotations: serde_json::Map::new(),
    };
    if i.is_multiple_of(2) {
        trace.annotations.insert("rule".into(), json!("domains[0]"));
    }
    AuditRecord {
        host: "api.example.com".to_string(),
        method: "GET".to_string(),
        path: "/v1/models?page=2".to_string(),
        action: Action::Allow,
        status_code: 200,
        duration_ms: 1.234,
        request_transforms: vec![trace],
        remote_addr: "127.0.0.1:51234".to_string(),
        sni: "api.example.com".to_string(),
        mode: "mitm",
        protocol: "https",
        ..Default::default()
    }
}

fn process_cpu_us() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e6 + tv.tv_usec() as f64;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Writes `records` records through `sink` and waits until they are all written.
pub fn run(sink: &AuditSink, records: u64) -> AuditBench {
    let records = records.max(1);
    // Warm-up: buffers grown, code paged in.
    for i in 0..records.min(1000) {
        sink.write(build(i));
    }
    sink.flush(std::time::Duration::from_secs(30));
    let cpu0 = process_cpu_us();
    let start = Instant::now();
    for i in 0..records {
        sink.write(build(i));
    }
    let caller = start.elapsed();
    sink.flush(std::time::Duration::from_secs(60));
    let cpu = process_cpu_us() - cpu0;
    AuditBench {
        records,
        caller_us: caller.as_secs_f64() * 1e6 / records as f64,
        cpu_us: cpu / records as f64,
    }
}
