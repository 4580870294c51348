//! One audit record as one JSON line, serialised straight into the caller's buffer: the
//! `time`/`level`/`msg` head, then the record's fields in [`AuditRecord`]'s order, optional
//! groups left out when empty. No intermediate `Value`, map or per-line allocation; the bytes are
//! pinned by `golden.rs`.

use std::io::Write as _;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::record::AuditRecord;
use crate::config::LogLevel;

/// Appends the line for `rec` (JSON object and newline) to `out`. On the (unreachable in
/// practice) failure to serialise a field, `out` is left as it was: no half line.
pub fn write(out: &mut Vec<u8>, time: OffsetDateTime, level: LogLevel, rec: &AuditRecord) {
    let start = out.len();
    if write_fields(out, time, level, rec).is_err() {
        out.truncate(start);
    }
}

fn write_fields(
    out: &mut Vec<u8>,
    time: OffsetDateTime,
    level: LogLevel,
    rec: &AuditRecord,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, time);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(crate::telemetry::level_name(level).as_bytes());
    out.extend_from_slice(b"\",\"msg\":\"request\"");
    field(out, "host", &rec.host)?;
    field(out, "method", &rec.method)?;
    field(out, "path", &rec.path)?;
    field(out, "action", &rec.action)?;
    field(out, "status_code", &rec.status_code)?;
    field(out, "duration_ms", &rec.duration_ms)?;
    field(out, "request_transforms", &rec.request_transforms)?;
    field(out, "response_transforms", &rec.response_transforms)?;
    opt(out, "rejected_by", &rec.rejected_by)?;
    opt(out, "stubbed_by", &rec.stubbed_by)?;
    opt(out, "error", &rec.error)?;
    opt(out, "reason", &rec.reason)?;
    field(out, "remote_addr", &rec.remote_addr)?;
    field(out, "sni", &rec.sni)?;
    field(out, "mode", rec.mode)?;
    field(out, "protocol", rec.protocol)?;
    opt(out, "mcp", &rec.mcp)?;
    opt(out, "body_capture", &rec.body_capture)?;
    opt(out, "uid", &rec.uid)?;
    opt(out, "user", &rec.user)?;
    opt(out, "pid", &rec.pid)?;
    opt(out, "comm", &rec.comm)?;
    opt(out, "orig_dst", &rec.orig_dst)?;
    opt(out, "policy", &rec.policy)?;
    opt(out, "tunnel", &rec.tunnel)?;
    opt(out, "postgres", &rec.postgres)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// RFC 3339 with nanoseconds, like Go's `time.RFC3339Nano` (the same formatter as
/// [`crate::telemetry::now_rfc3339`], written in place). Only digits and `-:.TZ`: no escaping.
fn write_time(out: &mut Vec<u8>, time: OffsetDateTime) {
    let at = out.len();
    if time.format_into(out, &Rfc3339).is_err() {
        out.truncate(at);
        let _ = write!(out, "{}", time.unix_timestamp());
    }
}

/// `,"key":<value>`. Keys are fixed ASCII names: no escaping needed.
fn field<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    key: &str,
    value: &T,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *out, value)
}

fn opt<T: Serialize>(
    out: &mut Vec<u8>,
    key: &str,
    value: &Option<T>,
) -> Result<(), serde_json::Error> {
    match value {
        Some(v) => field(out, key, v),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_matches_the_log_formatter() {
        for nanos in [0, 1, 120_000_000, 123_456_789, 999_999_999] {
            let t = time::macros::datetime!(2026-03-04 05:06:07 UTC)
                .replace_nanosecond(nanos)
                .unwrap();
            let mut out = Vec::new();
            write_time(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                t.format(&Rfc3339).unwrap(),
                "{nanos}"
            );
        }
    }

    #[test]
    fn appends_without_touching_what_is_there() {
        let mut out = b"previous line\n".to_vec();
        let rec = AuditRecord::default();
        write(&mut out, OffsetDateTime::UNIX_EPOCH, LogLevel::Info, &rec);
        write(&mut out, OffsetDateTime::UNIX_EPOCH, LogLevel::Warn, &rec);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with(r#"{"time":"1970-01-01T00:00:00Z","level":"INFO","#));
        assert!(lines[2].contains(r#""level":"WARN""#));
    }
}
