//! One audit record as one OTEL log record, as iron-proxy exports it: body `request`, severity
//! INFO/WARN/ERROR, timestamp = when the request started, attributes flat with the JSON line's
//! names and values (nested groups as maps and lists, normalised through JSON).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Severity};
use opentelemetry::{Key, StringValue};
use opentelemetry_sdk::logs::SdkLogRecord;
use serde_json::Value;

use crate::audit::AuditRecord;
use crate::config::LogLevel;

/// A record waiting for export: the record, its level and when it was written.
pub struct Queued {
    pub record: AuditRecord,
    pub level: LogLevel,
    pub written: SystemTime,
}

/// Fills `out` (a fresh record from the export logger) from `q`.
pub fn fill(out: &mut SdkLogRecord, q: &Queued, observed: SystemTime) {
    let took = Duration::from_secs_f64(q.record.duration_ms.max(0.0) / 1000.0);
    out.set_timestamp(q.written.checked_sub(took).unwrap_or(q.written));
    out.set_observed_timestamp(observed);
    out.set_body(AnyValue::String(StringValue::from("request")));
    let (number, text) = match q.level {
        LogLevel::Error => (Severity::Error, "ERROR"),
        LogLevel::Warn => (Severity::Warn, "WARN"),
        LogLevel::Debug => (Severity::Debug, "DEBUG"),
        LogLevel::Info => (Severity::Info, "INFO"),
    };
    out.set_severity_number(number);
    out.set_severity_text(text);
    // The record's own serialisation decides names and presence, so the export cannot drift
    // from the JSON line. It never fails for this type; nothing is exported if it did.
    if let Ok(Value::Object(fields)) = serde_json::to_value(&q.record) {
        for (k, v) in fields {
            if let Some(v) = any_value(v) {
                out.add_attribute(Key::new(k), v);
            }
        }
    }
}

/// JSON to an OTEL value; `null` has no OTEL form and is left out.
fn any_value(v: Value) -> Option<AnyValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AnyValue::String(StringValue::from(s)),
        Value::Array(items) => {
            AnyValue::ListAny(Box::new(items.into_iter().filter_map(any_value).collect()))
        }
        Value::Object(map) => AnyValue::Map(Box::new(
            map.into_iter()
                .filter_map(|(k, v)| any_value(v).map(|v| (Key::new(k), v)))
                .collect::<HashMap<_, _>>(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry::logs::{Logger as _, LoggerProvider as _};
    use opentelemetry_sdk::logs::SdkLoggerProvider;

    use super::*;
    use crate::audit::{Action, Trace, TraceAction};

    fn attr<'a>(r: &'a SdkLogRecord, key: &str) -> Option<&'a AnyValue> {
        r.attributes_iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    #[test]
    fn record_fields_become_flat_attributes() {
        let provider = SdkLoggerProvider::builder().build();
        let mut out = provider.logger("t").create_log_record();
        let mut annotations = serde_json::Map::new();
        annotations.insert("swapped".into(), serde_json::json!(["K"]));
        let q = Queued {
            record: AuditRecord {
                host: "api.example.com".into(),
                method: "GET".into(),
                path: "/v1".into(),
                action: Action::Reject,
                status_code: 403,
                duration_ms: 2.5,
                remote_addr: "127.0.0.1:5".into(),
                mode: "mitm",
                protocol: "http/1.1",
                rejected_by: Some("allowlist".into()),
                uid: Some(1001),
                request_transforms: vec![Trace {
                    name: "allowlist".into(),
                    action: TraceAction::Reject,
                    duration_ms: 0.1,
                    error: None,
                    annotations,
                }],
                ..AuditRecord::default()
            },
            level: LogLevel::Warn,
            written: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
        };
        fill(&mut out, &q, SystemTime::now());
        assert_eq!(out.severity_text(), Some("WARN"));
        assert_eq!(out.severity_number(), Some(Severity::Warn));
        assert_eq!(
            out.timestamp(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_micros(9_997_500))
        );
        assert_eq!(
            attr(&out, "host"),
            Some(&AnyValue::String("api.example.com".into()))
        );
        assert_eq!(attr(&out, "status_code"), Some(&AnyValue::Int(403)));
        assert_eq!(attr(&out, "duration_ms"), Some(&AnyValue::Double(2.5)));
        assert_eq!(
            attr(&out, "remote_addr"),
            Some(&AnyValue::String("127.0.0.1:5".into()))
        );
        assert_eq!(attr(&out, "uid"), Some(&AnyValue::Int(1001)));
        assert!(attr(&out, "stubbed_by").is_none());
        let Some(AnyValue::ListAny(traces)) = attr(&out, "request_transforms") else {
            panic!("request_transforms is not a list");
        };
        let AnyValue::Map(t) = &traces[0] else {
            panic!("trace is not a map")
        };
        assert_eq!(
            t.get(&Key::new("name")),
            Some(&AnyValue::String("allowlist".into()))
        );
        assert!(matches!(
            t.get(&Key::new("annotations")),
            Some(AnyValue::Map(_))
        ));
    }
}
