//! OTEL export settings, from the standard environment variables only (iron-proxy reads no YAML
//! for it). Export is on when a logs endpoint is named; the exporter itself reads the endpoint,
//! headers and timeout variables, this reads what decides whether and how to start it.

use std::time::Duration;

use crate::secrets::SecretValue;

/// `OTEL_EXPORTER_OTLP_PROTOCOL` values iron-proxy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Bounds of the export queue and batches (`OTEL_BLRP_*`, the batch log processor variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Records waiting for export beyond which new ones are dropped (and counted).
    pub max_queue: usize,
    pub max_batch: usize,
    /// How long a batch may wait to fill after its first record.
    pub delay: Duration,
    /// One export call's limit; a collector that does not answer in time loses that batch.
    pub export_timeout: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_millis(1000),
            export_timeout: Duration::from_millis(30_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub protocol: Protocol,
    /// The collector URL records go to (for the startup line; never carries headers).
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME` or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` is set: the
    /// resource keeps it; else `service.name` is `iron-proxy`, as iron-proxy reports itself.
    pub service_name_given: bool,
    pub batching: Batching,
    /// Managed mode's ingest token, sent as `Authorization: Bearer ...` (a header of the same
    /// name in `OTEL_EXPORTER_OTLP_HEADERS` wins). `Debug` shows `[redacted]`.
    pub bearer: Option<SecretValue>,
    /// The proxy's tags: the resource attribute `iron.proxy.tags`.
    pub tags: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("unsupported {var}: {value:?} (expected \"http/protobuf\" or \"grpc\")")]
    Protocol { var: &'static str, value: String },
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("otel exporter: {0}")]
    Build(String),
    #[error("otel exporter: starting the export thread: {0}")]
    Thread(#[source] std::io::Error),
}

pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `endpoint` as it may be logged: without userinfo, query or fragment (either may carry a
/// collector token).
pub fn shown_endpoint(endpoint: &str) -> String {
    let cut = endpoint.find(['?', '#']).unwrap_or(endpoint.len());
    let base = &endpoint[..cut];
    let (scheme, rest) = match base.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), base),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rsplit_once('@') {
        Some((_, h)) => format!("[redacted]@{h}"),
        None => authority.to_string(),
    };
    format!("{scheme}{host}{path}")
}

/// `None` when export is off (no endpoint variable set). Empty variables count as unset.
pub fn from_env(env: Env<'_>) -> Result<Option<Settings>, OtelError> {
    resolve(env, None)
}

/// Managed mode with an ingest token (iron-proxy §17): export is on, to `default_endpoint`
/// unless an `OTEL_*` endpoint variable names another, with the token as the bearer.
pub fn for_ingest(
    env: Env<'_>,
    default_endpoint: &str,
    token: SecretValue,
) -> Result<Settings, OtelError> {
    let mut s = resolve(env, Some(default_endpoint))?.ok_or_else(|| {
        OtelError::Build("no endpoint for the control plane's ingest token".into())
    })?;
    s.bearer = Some(token);
    Ok(s)
}

fn resolve(env: Env<'_>, default_endpoint: Option<&str>) -> Result<Option<Settings>, OtelError> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let base_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
    // The default (managed mode) stands in for the logs endpoint only when no variable names one.
    let logs_endpoint = get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").or_else(|| {
        base_endpoint
            .is_none()
            .then(|| default_endpoint.map(str::to_string))
            .flatten()
    });
    if logs_endpoint.is_none() && base_endpoint.is_none() {
        return Ok(None);
    }
    let (var, value) = match get("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL") {
        Some(v) => ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", Some(v)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            get("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    let protocol = match value.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("grpc") => Protocol::Grpc,
        Some(other) => {
            return Err(OtelError::Protocol {
                var,
                value: other.to_string(),
            });
        }
    };
    let endpoint = match (logs_endpoint, base_endpoint) {
        (Some(logs), _) => logs,
        // The HTTP exporter appends the signal path to the generic endpoint; gRPC does not.
        (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
            format!("{}/v1/logs", base.trim_end_matches('/'))
        }
        (None, base) => base.unwrap_or_default(),
    };
    let service_name_given = get("OTEL_SERVICE_NAME").is_some()
        || get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.split('=').next().map(str::trim) == Some("service.name"))
        });
    Ok(Some(Settings {
        protocol,
        endpoint,
        service_name_given,
        batching: batching(&get)?,
        bearer: None,
        tags: Vec::new(),
    }))
}

fn batching(get: &dyn Fn(&str) -> Option<String>) -> Result<Batching, OtelError> {
    let d = Batching::default();
    let num = |var: &'static str, default: u64| -> Result<u64, OtelError> {
        match get(var) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(OtelError::Invalid {
                    var,
                    reason: format!("{v:?} is not a positive integer"),
                }),
            },
        }
    };
    let max_queue = num("OTEL_BLRP_MAX_QUEUE_SIZE", d.max_queue as u64)? as usize;
    let max_batch = num("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", d.max_batch as u64)? as usize;
    let delay = num("OTEL_BLRP_SCHEDULE_DELAY", d.delay.as_millis() as u64)?;
    let timeout = num(
        "OTEL_BLRP_EXPORT_TIMEOUT",
        d.export_timeout.as_millis() as u64,
    )?;
    Ok(Batching {
        max_queue,
        max_batch: max_batch.min(max_queue),
        delay: Duration::from_millis(delay),
        export_timeout: Duration::from_millis(timeout),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<Settings>, OtelError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_env(&|k: &str| map.get(k).cloned())
    }

    #[test]
    fn logged_endpoint_hides_credentials() {
        assert_eq!(
            shown_endpoint("https://user:tok@c:4318/v1/logs?key=tok#x"),
            "https://[redacted]@c:4318/v1/logs"
        );
        assert_eq!(shown_endpoint("http://c:4317"), "http://c:4317");
    }

    #[test]
    fn off_without_an_endpoint() {
        assert!(parse(&[]).unwrap().is_none());
        assert!(
            parse(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn http_protobuf_by_default_with_the_signal_path() {
        let s = parse(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.endpoint, "http://c:4318/v1/logs");
        assert!(!s.service_name_given);
        assert_eq!(s.batching, Batching::default());
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:1/logs"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://l:1/logs");
    }

    #[test]
    fn grpc_and_the_logs_specific_protocol() {
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=b, service.name=x"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint, "http://c:4317");
        assert!(s.service_name_given);
    }

    #[test]
    fn unknown_protocol_is_iron_proxys_error() {
        let e = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unsupported OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" (expected "http/protobuf" or "grpc")"#
        );
    }

    #[test]
    fn an_ingest_token_turns_export_on_and_env_endpoints_win() {
        let token = || SecretValue::new("iing_t");
        let map = |vars: &[(&str, &str)]| -> HashMap<String, String> {
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let none = map(&[]);
        let s = for_ingest(&|k| none.get(k).cloned(), "http://cp:1/v1/logs", token()).unwrap();
        assert_eq!(s.endpoint, "http://cp:1/v1/logs");
        assert_eq!(s.bearer, Some(token()));
        assert!(!format!("{s:?}").contains("iing_t"));
        let base = map(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        let s = for_ingest(&|k| base.get(k).cloned(), "http://cp:1/v1/logs", token()).unwrap();
        assert_eq!(s.endpoint, "http://c:4318/v1/logs");
        let logs = map(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:2/x")]);
        let s = for_ingest(&|k| logs.get(k).cloned(), "http://cp:1/v1/logs", token()).unwrap();
        assert_eq!(s.endpoint, "http://l:2/x");
    }

    #[test]
    fn batch_variables_are_checked() {
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "100"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.batching.max_queue, 8);
        assert_eq!(s.batching.max_batch, 8);
        assert_eq!(s.batching.delay, Duration::from_millis(50));
        let e = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "0"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().starts_with("OTEL_BLRP_MAX_QUEUE_SIZE: "),
            "{e}"
        );
    }
}
