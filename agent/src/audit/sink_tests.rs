//! The queue policy: nothing lost on a clean shutdown, batches written in few calls, a stalled
//! output never blocks `write` and costs counted drops instead.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{AuditSink, BATCH_WINDOW};
use crate::audit::{Action, AuditRecord};
use crate::config::LogLevel;

/// An output that records what it got, counts `write_all` calls, and can be stalled.
#[derive(Clone, Default)]
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    writes: Arc<AtomicUsize>,
    stalled: Arc<AtomicBool>,
}

impl Capture {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.bytes.lock().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        while self.stalled.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes.lock().extend_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rec(i: usize, action: Action) -> AuditRecord {
    AuditRecord {
        host: "example.com".into(),
        method: "GET".into(),
        path: format!("/{i}"),
        action,
        status_code: 200,
        ..Default::default()
    }
}

#[test]
fn every_record_is_written_in_order_by_a_clean_shutdown() {
    let out = Capture::default();
    let sink = AuditSink::to_writer(LogLevel::Info, Box::new(out.clone()), Arc::default()).unwrap();
    for i in 0..5000 {
        sink.write(rec(i, Action::Allow));
    }
    drop(sink);
    let lines = out.lines();
    assert_eq!(lines.len(), 5000);
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["path"], format!("/{i}"));
    }
}

/// The jail's copy (for `run --summary`) gets every record, also those `log.level` keeps off
/// stderr, and counts nothing twice.
#[test]
fn the_copy_gets_every_record_whatever_the_level() {
    let (out, copy) = (Capture::default(), Capture::default());
    let sink = AuditSink::to_writer(LogLevel::Warn, Box::new(out.clone()), Arc::default())
        .unwrap()
        .with_copy(Box::new(copy.clone()))
        .unwrap();
    sink.write(rec(0, Action::Allow));
    sink.write(rec(1, Action::Reject));
    let counters = sink.counters.clone();
    drop(sink);
    assert_eq!(
        out.lines().len(),
        1,
        "only the WARN record on the main output"
    );
    let copied = copy.lines();
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied[0].contains("\"path\":\"/0\""), "{copied:?}");
    assert_eq!(counters.allow.load(Ordering::Relaxed), 1);
}

#[test]
fn a_burst_is_written_in_a_few_calls() {
    let out = Capture::default();
    let sink = AuditSink::to_writer(LogLevel::Info, Box::new(out.clone()), Arc::default()).unwrap();
    for i in 0..2000 {
        sink.write(rec(i, Action::Allow));
    }
    sink.flush(Duration::from_secs(10));
    assert_eq!(out.lines().len(), 2000);
    let writes = out.writes.load(Ordering::Relaxed);
    // ~250 KB of lines: a handful of batches (64 KiB high-water mark), never one per line.
    assert!(writes <= 20, "{writes} writes for 2000 records");
}

#[test]
fn a_lone_record_is_written_within_the_batch_window() {
    let out = Capture::default();
    let sink = AuditSink::to_writer(LogLevel::Info, Box::new(out.clone()), Arc::default()).unwrap();
    sink.write(rec(0, Action::Allow));
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.lines().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(out.lines().len(), 1, "written without a flush");
    assert!(BATCH_WINDOW < Duration::from_millis(50));
}

#[test]
fn a_stalled_output_never_blocks_and_drops_are_counted() {
    let out = Capture::default();
    out.stalled.store(true, Ordering::Release);
    let sink = AuditSink::with_limit(
        LogLevel::Info,
        Box::new(out.clone()),
        64 * 1024,
        Arc::default(),
    )
    .unwrap();
    let start = Instant::now();
    for i in 0..20_000 {
        sink.write(rec(i, Action::Allow));
    }
    // 20k records against a stalled output: bounded by CPU, not by the output.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let dropped = sink.counters.dropped.load(Ordering::Relaxed);
    assert!(dropped > 10_000, "dropped {dropped}");
    // Every record is still counted by action.
    assert_eq!(sink.counters.allow.load(Ordering::Relaxed), 20_000);
    out.stalled.store(false, Ordering::Release);
    sink.flush(Duration::from_secs(10));
    let written = out.lines().len() as u64;
    assert_eq!(written + dropped, 20_000);
}

#[test]
fn records_below_the_level_are_counted_not_written() {
    let out = Capture::default();
    let sink = AuditSink::to_writer(LogLevel::Warn, Box::new(out.clone()), Arc::default()).unwrap();
    sink.write(rec(0, Action::Allow));
    sink.write(rec(1, Action::Reject));
    sink.flush(Duration::from_secs(10));
    let lines = out.lines();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains(r#""action":"reject""#));
    assert_eq!(sink.counters.allow.load(Ordering::Relaxed), 1);
    assert_eq!(sink.counters.dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn concurrent_writers_lose_nothing() {
    let out = Capture::default();
    let sink = Arc::new(
        AuditSink::to_writer(LogLevel::Info, Box::new(out.clone()), Arc::default()).unwrap(),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    sink.write(rec(t * 1000 + i, Action::Allow));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    sink.flush(Duration::from_secs(10));
    let mut paths: Vec<String> = out
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 4000);
}

#[test]
fn records_carry_the_tags_in_force_when_written() {
    let out = Capture::default();
    let sink = AuditSink::to_writer(LogLevel::Info, Box::new(out.clone()), Arc::default()).unwrap();
    sink.write(rec(0, Action::Allow));
    sink.set_tags(Some(vec!["env:prod".into(), "svc:a".into()]));
    sink.write(rec(1, Action::Reject));
    sink.set_tags(None);
    sink.write(rec(2, Action::Allow));
    drop(sink);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0].get("tags").is_none());
    assert_eq!(lines[1]["tags"], serde_json::json!(["env:prod", "svc:a"]));
    assert!(lines[2].get("tags").is_none());
}
