//! OTLP/HTTP logs requests: body decoding (protobuf or JSON, optionally gzip, size-limited) and
//! the records' conversion to [`AuditEvent`]s.

use std::io::Read as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use prost::Message as _;
use serde_json::{Map, Value};

use super::ring::AuditEvent;

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From `Content-Type` (parameters ignored); `None`: not an OTLP encoding.
    pub fn from_content_type(ct: Option<&str>) -> Option<Self> {
        let essence = ct?.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Self::Protobuf),
            "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    /// The (empty) `ExportLogsServiceResponse`: full success.
    pub fn success_body(self) -> Vec<u8> {
        match self {
            Self::Protobuf => Vec::new(),
            Self::Json => b"{}".to_vec(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the gzip body could not be decompressed: {0}")]
    Gzip(String),
    #[error("not an OTLP ExportLogsServiceRequest ({0})")]
    Malformed(String),
}

/// Decodes a body already limited to `max` bytes on the wire; a gzip body is also limited to
/// `max` bytes once decompressed (a small bomb cannot fill memory).
pub fn decode(
    body: &[u8],
    gzip: bool,
    enc: Encoding,
    max: usize,
) -> Result<ExportLogsServiceRequest, DecodeError> {
    let plain;
    let bytes = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| DecodeError::Gzip(e.to_string()))?;
        if out.len() > max {
            return Err(DecodeError::TooLarge(max));
        }
        plain = out;
        &plain[..]
    } else {
        body
    };
    match enc {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(bytes)
            .map_err(|e| DecodeError::Malformed(format!("protobuf: {e}"))),
        Encoding::Json => {
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(format!("JSON: {e}")))
        }
    }
}

/// The records of `req` as events of `proxy_id` with `tags`, received at `now_ms`.
pub fn events(
    req: &ExportLogsServiceRequest,
    proxy_id: &str,
    tags: &[String],
    now_ms: i64,
) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                let mut attributes = Map::new();
                for kv in &r.attributes {
                    attributes.insert(kv.key.clone(), json_of(kv.value.as_ref()));
                }
                let text = |k: &str| {
                    attributes
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let nanos = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                let time_ms = if nanos == 0 {
                    now_ms
                } else {
                    i64::try_from(nanos / 1_000_000).unwrap_or(now_ms)
                };
                out.push(AuditEvent {
                    seq: 0,
                    time_ms,
                    received_ms: now_ms,
                    proxy_id: proxy_id.to_string(),
                    tags: tags.to_vec(),
                    host: text("host"),
                    method: text("method"),
                    path: text("path"),
                    action: text("action"),
                    status_code: attributes.get("status_code").and_then(Value::as_i64),
                    severity: r.severity_text.clone(),
                    attributes,
                });
            }
        }
    }
    out
}

/// An OTLP value as JSON (bytes as lowercase hex; an absent value as null).
fn json_of(v: Option<&AnyValue>) -> Value {
    let Some(v) = v.and_then(|v| v.value.as_ref()) else {
        return Value::Null;
    };
    match v {
        Av::StringValue(s) => Value::String(s.clone()),
        Av::BoolValue(b) => Value::Bool(*b),
        Av::IntValue(i) => Value::from(*i),
        Av::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Av::ArrayValue(a) => Value::Array(a.values.iter().map(|x| json_of(Some(x))).collect()),
        Av::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|p| (p.key.clone(), json_of(p.value.as_ref())))
                .collect(),
        ),
        Av::BytesValue(b) => Value::String(hex::encode(b)),
        // Newer protocol additions (value references) carry nothing readable here.
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const JSON: &str = r#"{"resourceLogs":[{"resource":{"attributes":[]},"scopeLogs":[{"scope":{"name":"iron-proxy/audit"},"logRecords":[{"timeUnixNano":"1780308000123000000","severityText":"WARN","body":{"stringValue":"request"},"attributes":[{"key":"host","value":{"stringValue":"api.example.com"}},{"key":"action","value":{"stringValue":"reject"}},{"key":"status_code","value":{"intValue":"403"}},{"key":"request_transforms","value":{"arrayValue":{"values":[{"kvlistValue":{"values":[{"key":"name","value":{"stringValue":"allowlist"}}]}}]}}}]}]}]}]}"#;

    #[test]
    fn json_gzip_and_protobuf_decode_to_the_same_events() {
        let req = decode(JSON.as_bytes(), false, Encoding::Json, 1 << 20).unwrap();
        let ev = events(&req, "prx_1", &["env:prod".into()], 5);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].host, "api.example.com");
        assert_eq!(ev[0].action, "reject");
        assert_eq!(ev[0].status_code, Some(403));
        assert_eq!(ev[0].time_ms, 1_780_308_000_123);
        assert_eq!(
            ev[0].attributes["request_transforms"][0]["name"],
            "allowlist"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(JSON.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let again = decode(&gz, true, Encoding::Json, 1 << 20).unwrap();
        assert_eq!(again, req);
        let pb = req.encode_to_vec();
        assert_eq!(
            decode(&pb, false, Encoding::Protobuf, 1 << 20).unwrap(),
            req
        );
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(matches!(
            decode(b"{\"resourceLogs\":5}", false, Encoding::Json, 100),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff], false, Encoding::Protobuf, 100),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"not gzip", true, Encoding::Json, 100),
            Err(DecodeError::Gzip(_))
        ));
        // 10 KiB of zeros compress to a few bytes: the limit holds after decompression.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&[0u8; 10_240]).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 100);
        assert!(matches!(
            decode(&gz, true, Encoding::Protobuf, 1000),
            Err(DecodeError::TooLarge(1000))
        ));
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::from_content_type(Some("text/plain")), None);
    }
}
