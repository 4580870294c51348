//! Audit: exactly one JSON record per answered request, whatever path it took.
//!
//! [`record::AuditRecord`] is the schema (iron-proxy's flat shape); [`PendingAudit`] guarantees
//! the "exactly one" part: it is created when a request arrives, travels with the request, and
//! emits on drop if nothing else emitted it (a client that went away mid-request is audited as
//! `client_cancel`). [`sink::AuditSink`] serialises records ([`line`]) into a batch that a writer
//! thread writes off the data path, and also offers to the OTEL exporter ([`otel`]) when one is
//! configured.

pub mod bench;
#[cfg(test)]
mod golden;
pub mod line;
pub mod mcp;
pub mod otel;
pub mod record;
pub mod sink;

use std::sync::Arc;
use std::time::Instant;

pub use record::{Action, AuditRecord, PostgresAudit, Tags, Trace, TraceAction};
pub use sink::AuditSink;

/// An audit record that has not been written yet. Emits exactly once: explicitly via
/// [`PendingAudit::finish`] or, as `client_cancel`, when dropped unfinished.
pub struct PendingAudit {
    record: Option<AuditRecord>,
    started: Instant,
    sink: Arc<AuditSink>,
}

impl PendingAudit {
    pub fn new(record: AuditRecord, sink: Arc<AuditSink>) -> Self {
        Self {
            record: Some(record),
            started: Instant::now(),
            sink,
        }
    }

    /// The agent's metrics registry (the one the sink counts into).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.sink.metrics()
    }

    /// Mutable access to the record while the request is in flight.
    pub fn record(&mut self) -> &mut AuditRecord {
        // The record is only taken by `finish`, which consumes self.
        self.record.get_or_insert_with(AuditRecord::default)
    }

    /// Writes the record with its final action and status.
    pub fn finish(mut self, action: Action, status: u16) {
        self.emit(action, status);
    }

    fn emit(&mut self, action: Action, status: u16) {
        if let Some(mut rec) = self.record.take() {
            rec.action = action;
            rec.status_code = status;
            rec.duration_ms = (self.started.elapsed().as_micros() as f64) / 1000.0;
            self.sink.write(rec);
        }
    }
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        // Reached only when the request future was dropped before an answer was decided:
        // the client closed the connection. iron-proxy records those as client_cancel/200.
        self.emit(Action::ClientCancel, 200);
    }
}
