//! One audit record as one JSON line, serialised straight into the caller's buffer: the
//! `time`/`level`/`msg` head, then the record's fields in [`AuditRecord`]'s order, optional
//! groups left out when empty. No intermediate `Value`, map or per-line allocation; the bytes are
//! pinned by `golden.rs`.

use std::io::Write as _;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::record::{AuditRecord, Trace};
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
    str_field(out, "host", &rec.host)?;
    str_field(out, "method", &rec.method)?;
    str_field(out, "path", &rec.path)?;
    raw_str_field(out, "action", rec.action.as_str());
    field(out, "status_code", &rec.status_code)?;
    field(out, "duration_ms", &rec.duration_ms)?;
    traces_field(out, "request_transforms", &rec.request_transforms)?;
    traces_field(out, "response_transforms", &rec.response_transforms)?;
    opt_str(out, "rejected_by", &rec.rejected_by)?;
    opt_str(out, "stubbed_by", &rec.stubbed_by)?;
    opt_str(out, "error", &rec.error)?;
    opt_str(out, "reason", &rec.reason)?;
    str_field(out, "remote_addr", &rec.remote_addr)?;
    str_field(out, "sni", &rec.sni)?;
    str_field(out, "mode", rec.mode)?;
    str_field(out, "protocol", rec.protocol)?;
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
    opt(out, "tags", &rec.tags)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// RFC 3339 with nanoseconds, like Go's `time.RFC3339Nano`: the bytes of
/// [`crate::telemetry::now_rfc3339`] (the `time` crate's `Rfc3339`, trailing zeros of the
/// fraction trimmed), written in place. UTC years 0..=9999 (every real clock) take a digit-by-digit
/// path: `format_into` costs several times as much per line. Only digits and `-:.TZ`: no escaping.
fn write_time(out: &mut Vec<u8>, time: OffsetDateTime) {
    let (year, month, day) = time.to_calendar_date();
    if !time.offset().is_utc() || !(0..=9999).contains(&year) {
        let at = out.len();
        if time.format_into(out, &Rfc3339).is_err() {
            out.truncate(at);
            let _ = write!(out, "{}", time.unix_timestamp());
        }
        return;
    }
    let (h, m, s, nanos) = time.to_hms_nano();
    let year = year as u32;
    let d2 = |v: u8| [b'0' + v / 10, b'0' + v % 10];
    let mut buf = [0u8; 30];
    buf[..4].copy_from_slice(&[
        b'0' + (year / 1000) as u8,
        b'0' + (year / 100 % 10) as u8,
        b'0' + (year / 10 % 10) as u8,
        b'0' + (year % 10) as u8,
    ]);
    buf[4] = b'-';
    buf[5..7].copy_from_slice(&d2(month as u8));
    buf[7] = b'-';
    buf[8..10].copy_from_slice(&d2(day));
    buf[10] = b'T';
    buf[11..13].copy_from_slice(&d2(h));
    buf[13] = b':';
    buf[14..16].copy_from_slice(&d2(m));
    buf[16] = b':';
    buf[17..19].copy_from_slice(&d2(s));
    let mut len = 19;
    if nanos != 0 {
        buf[len] = b'.';
        let mut n = nanos;
        for i in (0..9).rev() {
            buf[len + 1 + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        len += 10;
        while buf[len - 1] == b'0' {
            len -= 1;
        }
    }
    buf[len] = b'Z';
    out.extend_from_slice(&buf[..=len]);
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

/// `,"key":"<value>"`: a string with nothing to escape (the common case) is copied in one go;
/// anything else goes through serde_json, so the escaping is serde_json's byte for byte.
fn str_field(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    json_str(out, value)
}

/// A JSON string. serde_json escapes `"`, `\\` and bytes below 0x20, and nothing else.
fn json_str(out: &mut Vec<u8>, value: &str) -> Result<(), serde_json::Error> {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, value)
    }
}

/// `,"key":"<value>"` for fixed ASCII values (action names): nothing to escape.
fn raw_str_field(out: &mut Vec<u8>, key: &str, value: &'static str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// A trace list, written by hand in [`Trace`]'s serde order (`name`, `action`, `duration_ms`,
/// `error` if any, `annotations` if not empty); annotations, arbitrary JSON, go through serde.
fn traces_field(out: &mut Vec<u8>, key: &str, traces: &[Trace]) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, t) in traces.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json_str(out, &t.name)?;
        raw_str_field(out, "action", t.action.as_str());
        field(out, "duration_ms", &t.duration_ms)?;
        opt_str(out, "error", &t.error)?;
        if !t.annotations.is_empty() {
            field(out, "annotations", &t.annotations)?;
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

fn opt_str(out: &mut Vec<u8>, key: &str, value: &Option<String>) -> Result<(), serde_json::Error> {
    match value {
        Some(v) => str_field(out, key, v),
        None => Ok(()),
    }
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

    fn formatted(t: OffsetDateTime) -> String {
        let mut out = Vec::new();
        write_time(&mut out, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn time_matches_the_log_formatter() {
        for nanos in [0, 1, 10, 120_000_000, 123_456_789, 999_999_999, 100_000_000] {
            let t = time::macros::datetime!(2026-03-04 05:06:07 UTC)
                .replace_nanosecond(nanos)
                .unwrap();
            assert_eq!(formatted(t), t.format(&Rfc3339).unwrap(), "{nanos}");
        }
    }

    /// The digit-by-digit path against the `time` crate over a spread of instants (every month
    /// and leap day, years 0 to 9999, fractions with 0..9 significant digits).
    #[test]
    fn time_matches_the_log_formatter_everywhere() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let min = time::macros::datetime!(0000-01-01 00:00:00 UTC).unix_timestamp();
        let max = time::macros::datetime!(9999-12-31 23:59:59 UTC).unix_timestamp();
        for i in 0..20_000u64 {
            let secs = min + (next() % (max - min) as u64) as i64;
            let nanos = match i % 4 {
                0 => 0,
                1 => (next() % 1_000_000_000) as u32,
                2 => (next() % 1000) as u32 * 1_000_000,
                _ => (next() % 10) as u32 * 10u32.pow((next() % 9) as u32),
            };
            let t = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .replace_nanosecond(nanos)
                .unwrap();
            assert_eq!(formatted(t), t.format(&Rfc3339).unwrap(), "{secs} {nanos}");
        }
        let leap = time::macros::datetime!(2024-02-29 23:59:59.5 UTC);
        assert_eq!(formatted(leap), "2024-02-29T23:59:59.5Z");
    }

    #[test]
    fn other_offsets_and_years_keep_the_slow_path() {
        let t = time::macros::datetime!(2026-03-04 05:06:07.25 +01:00);
        assert_eq!(formatted(t), t.format(&Rfc3339).unwrap());
    }

    /// The copy-through path and serde_json agree on every ASCII byte and on non-ASCII text.
    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let mut cases: Vec<String> = (0u8..128).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(["", "plain", "ünï\u{2028}", "\u{7f}", "x\"y\\z"].map(String::from));
        for c in cases {
            let mut out = Vec::new();
            json_str(&mut out, &c).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&c).unwrap(),
                "{c:?}"
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
