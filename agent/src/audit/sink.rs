//! Writes audit records as JSON lines without ever blocking the request path.
//!
//! Queue policy (explicit, bounded, non-blocking):
//! - A request serialises its record straight into the shared batch buffer (one short lock, no
//!   allocation once the buffer has grown) and returns; it never waits for I/O.
//! - A writer thread takes the whole batch (a buffer swap) and writes it with one `write` call,
//!   [`BATCH_WINDOW`] after the first record of the batch, or at once when the batch passes
//!   [`HIGH_WATER`] bytes, when someone flushes, and at shutdown.
//! - When the writer falls [`MAX_PENDING`] bytes behind (stderr stalled), new records are
//!   dropped, counted (`iron_agent_audit_dropped_total` on /metrics), and reported by a WARN line
//!   at most every [`DROP_REPORT_EVERY`]. Requests are still answered: blocking them on a stalled
//!   log would turn a logging problem into an outage.
//! - Failing to start the writer is a startup error; [`AuditSink::flush`] (called at shutdown)
//!   waits until everything queued is written.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use parking_lot::{Condvar, Mutex};

use super::line;
use super::otel::{OtelExport, Queued};
use super::record::{Action, AuditRecord, Tags};
use crate::config::LogLevel;
use crate::metrics::Metrics;

/// How long the writer lets a batch fill after its first record.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// A batch this large is written without waiting for the window to end.
pub const HIGH_WATER: usize = 64 * 1024;
/// Bytes queued but not yet written beyond which new records are dropped (about 16k records).
pub const MAX_PENDING: usize = 8 * 1024 * 1024;
/// Minimum time between two "records dropped" warnings.
pub const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long dropping the sink waits for the queue to be written.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Buffers that grew past this during a burst are shrunk back after it.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Request counters by action, plus dropped records, exported on `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub allow: AtomicU64,
    pub reject: AtomicU64,
    pub stub: AtomicU64,
    pub error: AtomicU64,
    pub client_cancel: AtomicU64,
    /// Records not written because the writer was [`MAX_PENDING`] bytes behind.
    pub dropped: AtomicU64,
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

#[derive(Default)]
struct State {
    /// Serialised lines waiting for the writer.
    batch: Vec<u8>,
    /// Records appended so far / written so far (flush waits for `written >= appended`).
    appended: u64,
    written: u64,
    /// A flusher is waiting: write now instead of at the end of the window.
    urgent: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// [`MAX_PENDING`], smaller in tests.
    max_pending: usize,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes flushers.
    done: Condvar,
}

pub struct AuditSink {
    shared: Option<Arc<Shared>>,
    min_level: LogLevel,
    pub counters: Arc<Counters>,
    /// OTEL export, when configured: every record, whatever `log.level` filters out of stderr.
    /// Swappable: managed mode (re)starts it when the control plane hands out an ingest token
    /// or new tags.
    otel: ArcSwapOption<OtelExport>,
    /// The proxy's tags, put into every record (managed mode).
    tags: ArcSwapOption<Vec<String>>,
    /// Where each record's request metrics and the dropped records are counted.
    metrics: Arc<Metrics>,
    /// A second writer that gets every record whatever `log.level` (the jail's copy for its
    /// `--summary`); it only writes, the counting is done here.
    copy: Option<Box<AuditSink>>,
}

/// Where the writer thread puts batches.
pub type Output = Box<dyn Write + Send>;

/// stderr, locked for each batch so a tracing line never lands inside one.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditSink {
    /// A sink writing to stderr from a background thread; records below `min_level` are
    /// counted but not written (iron-proxy's `log.level` applies to audit lines too).
    pub fn stderr(min_level: LogLevel, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        Self::to_writer(min_level, Box::new(Stderr), metrics)
    }

    /// A sink writing batches to `out` from a background thread.
    pub fn to_writer(
        min_level: LogLevel,
        out: Output,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        Self::with_limit(min_level, out, MAX_PENDING, metrics)
    }

    pub(super) fn with_limit(
        min_level: LogLevel,
        out: Output,
        max_pending: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            max_pending,
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            shared: shared.clone(),
            counters: counters.clone(),
            out,
            reported_drops: 0,
            last_report: None,
        };
        // Detached: it exits once the sink is dropped and the queue is written.
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            shared: Some(shared),
            min_level,
            counters,
            otel: ArcSwapOption::empty(),
            tags: ArcSwapOption::empty(),
            metrics,
            copy: None,
        })
    }

    /// Also writes every record, whatever its level, to `out`.
    pub fn with_copy(mut self, out: Output) -> std::io::Result<Self> {
        let copy = Self::to_writer(LogLevel::Debug, out, self.metrics.clone())?;
        self.copy = Some(Box::new(copy));
        Ok(self)
    }

    /// A sink that only counts (tests, benchmarks), into a registry of its own.
    pub fn discard() -> Self {
        Self {
            shared: None,
            min_level: LogLevel::Error,
            counters: Arc::default(),
            otel: ArcSwapOption::empty(),
            tags: ArcSwapOption::empty(),
            metrics: Arc::default(),
            copy: None,
        }
    }

    /// The registry this sink counts into (shared with the rest of the agent).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Also exports every record over OTLP.
    pub fn with_otel(self, otel: Option<OtelExport>) -> Self {
        self.otel.store(otel.map(Arc::new));
        self
    }

    /// Puts `otel` in place of the running export (if any) and returns the old one, which the
    /// caller shuts down (its queue is flushed there, off the request path).
    pub fn replace_otel(&self, otel: Option<OtelExport>) -> Option<Arc<OtelExport>> {
        self.otel.swap(otel.map(Arc::new))
    }

    /// Whether records are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.otel.load().is_some()
    }

    /// Every record from now on carries `tags` (none: no `tags` field).
    pub fn set_tags(&self, tags: Option<Vec<String>>) {
        self.tags.store(tags.map(Arc::new));
    }

    /// Flushes and stops the OTEL export (bounded); a no-op without one.
    pub fn close_export(&self, timeout: Duration) {
        if let Some(otel) = self.otel.load_full() {
            otel.shutdown(timeout);
        }
    }

    /// Queues one record. Never waits for I/O; drops (and counts) the record when the writer
    /// is [`MAX_PENDING`] bytes behind.
    pub fn write(&self, mut rec: AuditRecord) {
        if rec.tags.is_none() {
            rec.tags = self.tags.load_full().map(Tags);
        }
        self.counters.bump(rec.action);
        observe(&self.metrics, &rec);
        let level = rec.level();
        if level >= self.min_level {
            self.append(level, &rec);
        }
        if let Some(copy) = &self.copy {
            copy.append(level, &rec);
        }
        if let Some(otel) = &*self.otel.load() {
            otel.offer(Queued {
                record: rec,
                level,
                written: SystemTime::now(),
            });
        }
    }

    /// Serialises the line into the batch (or drops it when the writer is too far behind).
    fn append(&self, level: LogLevel, rec: &AuditRecord) {
        let Some(shared) = &self.shared else { return };
        let now = time::OffsetDateTime::now_utc();
        let mut st = shared.state.lock();
        let before = st.batch.len();
        if before >= shared.max_pending || st.closed {
            drop(st);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_dropped();
            return;
        }
        line::write(&mut st.batch, now, level, rec);
        st.appended += 1;
        let after = st.batch.len();
        drop(st);
        // One wake-up per batch: for its first record, and when it passes the high-water mark.
        if before == 0 || (before < HIGH_WATER && after >= HIGH_WATER) {
            shared.work.notify_one();
        }
    }

    /// Waits (bounded) until every record queued so far is written; called before exit.
    pub fn flush(&self, timeout: Duration) {
        if let Some(copy) = &self.copy {
            copy.flush(timeout);
        }
        let Some(shared) = &self.shared else { return };
        let deadline = Instant::now() + timeout;
        let mut st = shared.state.lock();
        let target = st.appended;
        while st.written < target {
            st.urgent = true;
            shared.work.notify_one();
            if shared.done.wait_until(&mut st, deadline).timed_out() {
                return;
            }
        }
    }
}

/// The request metrics of one record: its action, policy, latency and transform traces.
fn observe(metrics: &Metrics, rec: &AuditRecord) {
    metrics.request(
        rec.action.as_str(),
        rec.policy.as_deref(),
        rec.protocol,
        rec.duration_ms,
    );
    for (phase, traces) in [
        ("request", &rec.request_transforms),
        ("response", &rec.response_transforms),
    ] {
        for t in traces {
            metrics.transform(&t.name, phase, t.action.as_str());
        }
    }
}

impl Drop for AuditSink {
    /// A clean shutdown loses nothing: what is queued is written before the writer exits (the
    /// wait is bounded, so a stalled stderr cannot hang the exit).
    fn drop(&mut self) {
        self.flush(SHUTDOWN_FLUSH);
        if let Some(shared) = &self.shared {
            shared.state.lock().closed = true;
            shared.work.notify_one();
        }
    }
}

/// The writer thread's side.
struct Writer {
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    out: Output,
    reported_drops: u64,
    last_report: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut spare: Vec<u8> = Vec::with_capacity(HIGH_WATER);
        loop {
            let (upto, closed) = {
                let mut st = self.shared.state.lock();
                while st.batch.is_empty() && !st.closed && !st.urgent {
                    self.shared.work.wait(&mut st);
                }
                // Let the batch fill for a moment, unless someone is waiting for it.
                if !st.urgent && !st.closed && st.batch.len() < HIGH_WATER {
                    let _ = self.shared.work.wait_for(&mut st, BATCH_WINDOW);
                }
                std::mem::swap(&mut st.batch, &mut spare);
                st.urgent = false;
                (st.appended, st.closed)
            };
            if !spare.is_empty() {
                // Nothing sensible to do if stderr is gone; the records are still counted.
                let _ = self.out.write_all(&spare);
                let _ = self.out.flush();
                spare.clear();
                if spare.capacity() > KEEP_CAPACITY {
                    spare.shrink_to(KEEP_CAPACITY);
                }
            }
            let exit = {
                let mut st = self.shared.state.lock();
                st.written = upto;
                self.shared.done.notify_all();
                closed && st.batch.is_empty()
            };
            self.report_drops(exit);
            if exit {
                return;
            }
        }
    }

    /// One WARN line per [`DROP_REPORT_EVERY`] at most (and a last one at exit), with the
    /// count since the previous one.
    fn report_drops(&mut self, last: bool) {
        let total = self.counters.dropped.load(Ordering::Relaxed);
        if total == self.reported_drops
            || (!last
                && self
                    .last_report
                    .is_some_and(|t| t.elapsed() < DROP_REPORT_EVERY))
        {
            return;
        }
        tracing::warn!(
            dropped = total - self.reported_drops,
            dropped_total = total,
            "audit log writer fell behind: records dropped (stderr too slow?)"
        );
        self.reported_drops = total;
        self.last_report = Some(Instant::now());
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
