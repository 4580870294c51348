//! Serialises audit records to JSON lines and writes them from a dedicated thread, so a slow
//! stderr never stalls the data path's worker threads more than a bounded queue allows.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use serde::Serialize;

use super::record::{Action, AuditRecord};
use crate::config::LogLevel;

/// Queue depth before writers feel backpressure. Records are never dropped.
const QUEUE: usize = 8192;

/// Request counters by action, exported on `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub allow: AtomicU64,
    pub reject: AtomicU64,
    pub stub: AtomicU64,
    pub error: AtomicU64,
    pub client_cancel: AtomicU64,
}

impl Counters {
    fn bump(&self, action: Action) {
        let c = match action {
            Action::Allow => &self.allow,
            Action::Reject => &self.reject,
            Action::Stub => &self.stub,
            Action::Error => &self.error,
            Action::ClientCancel => &self.client_cancel,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

enum Msg {
    Line(Vec<u8>),
    Flush(std::sync::mpsc::Sender<()>),
}

pub struct AuditSink {
    tx: Option<SyncSender<Msg>>,
    min_level: LogLevel,
    pub counters: Counters,
}

#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    level: &'static str,
    msg: &'static str,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

impl AuditSink {
    /// A sink writing to stderr from a background thread; records below `min_level` are
    /// counted but not written (iron-proxy's `log.level` applies to audit lines too).
    pub fn stderr(min_level: LogLevel) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Line(line) => {
                            let mut err = std::io::stderr().lock();
                            // Nothing sensible to do if stderr is gone; the record is still counted.
                            let _ = err.write_all(&line);
                        }
                        Msg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            })?;
        drop(spawned);
        Ok(Self {
            tx: Some(tx),
            min_level,
            counters: Counters::default(),
        })
    }

    /// A sink that only counts (tests, benchmarks).
    pub fn discard() -> Self {
        Self {
            tx: None,
            min_level: LogLevel::Error,
            counters: Counters::default(),
        }
    }

    pub fn write(&self, mut rec: AuditRecord) {
        rec.set_decider_from_traces();
        self.counters.bump(rec.action);
        let level = rec.level();
        if level < self.min_level {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let mut bytes = Vec::new();
        serialize_line(&mut bytes, &crate::telemetry::now_rfc3339(), level, &rec);
        if !bytes.is_empty() {
            // Blocks only when the writer is QUEUE lines behind.
            let _ = tx.send(Msg::Line(bytes));
        }
    }

    /// Waits (bounded) until every record queued so far is written; called before exit.
    pub fn flush(&self, timeout: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }
}

/// Appends one audit line (JSON object and newline) to `out`; appends nothing if it cannot be
/// serialised.
pub(super) fn serialize_line(out: &mut Vec<u8>, time: &str, level: LogLevel, rec: &AuditRecord) {
    let line = Line {
        time,
        level: crate::telemetry::level_name(level),
        msg: "request",
        record: rec,
    };
    if let Ok(mut bytes) = serde_json::to_vec(&line) {
        bytes.push(b'\n');
        out.extend_from_slice(&bytes);
    }
}
