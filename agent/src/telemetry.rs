//! Logging: JSON lines on stderr in iron-proxy's shape (`time`, `level`, `msg`, then fields).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogLevel;

/// An error and its causes on one line (`a: b: c`), each cause once: the top-level errors of
/// hyper and the AWS SDK say little, the cause names what failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// RFC 3339 UTC timestamp with nanoseconds, like Go's `time.RFC3339Nano`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

pub fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARN",
        LogLevel::Error => "ERROR",
    }
}

fn tracing_level(l: LogLevel) -> Level {
    match l {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    }
}

/// Log target of the startup lines (`listening`, `iron-agent starting`): always shown, whatever
/// `log.level` says, because operators and tools discover bound ports (port 0) from them.
pub const STARTUP: &str = "iron_agent::startup";

/// Installs the global JSON logger at `level`. Only our own crate logs below WARN, so library
/// chatter (rustls, hickory) does not drown the audit stream.
pub fn init(level: LogLevel) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let ours = tracing_level(level);
    let filter = Targets::new()
        .with_default(LevelFilter::from_level(Level::WARN).min(LevelFilter::from_level(ours)))
        .with_target("iron_agent", ours)
        .with_target(STARTUP, Level::INFO.max(ours))
        .with_target("iron_agent_tests", ours);
    // `RUST_LOG=iron_agent::ebpf=debug`: the programs' own log lines (off by default).
    let filter = match crate::ebpf::log::level_from_env() {
        0 => filter,
        n => filter.with_target(
            crate::ebpf::log::TARGET,
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE,
            ][usize::from(n.clamp(1, 5) - 1)],
        ),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(JsonLine);
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// Formats one event as `{"time","level","msg",...fields}`.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        let mut out = Map::new();
        out.insert("time".into(), Value::String(now_rfc3339()));
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            _ => "DEBUG",
        };
        out.insert("level".into(), Value::String(level.into()));
        let msg = fields
            .0
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        out.insert("msg".into(), msg);
        out.extend(fields.0);
        let line = serde_json::to_string(&Value::Object(out)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}
