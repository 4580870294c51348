//! OTEL export of audit records: local OTLP receivers speaking the real protocols (OTLP/HTTP
//! protobuf on hyper, OTLP/gRPC on tonic), started by the test; the agent exports to them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use iron_agent_tests::client::get;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::metrics::scrape_metrics;

/// One received log record, flattened: resource and scope with it, values as JSON.
#[derive(Debug, Clone)]
struct Received {
    resource: BTreeMap<String, Value>,
    scope: String,
    severity_text: String,
    severity_number: i32,
    body: Value,
    time_unix_nano: u64,
    attrs: BTreeMap<String, Value>,
}

/// What a receiver got, and how it answers.
#[derive(Default)]
struct Inbox {
    records: Mutex<Vec<Received>>,
    /// Request headers of each export call (lower-case names).
    headers: Mutex<Vec<http::HeaderMap>>,
    /// Milliseconds each export call waits before answering (`u64::MAX`: never answers).
    delay_ms: AtomicU64,
}

impl Inbox {
    fn take(&self, req: ExportLogsServiceRequest, headers: http::HeaderMap) {
        self.headers.lock().unwrap().push(headers);
        let mut out = self.records.lock().unwrap();
        for rl in req.resource_logs {
            let resource = rl.resource.map(|r| attrs(r.attributes)).unwrap_or_default();
            for sl in rl.scope_logs {
                let scope = sl.scope.map(|s| s.name).unwrap_or_default();
                for lr in sl.log_records {
                    out.push(Received {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        severity_text: lr.severity_text,
                        severity_number: lr.severity_number,
                        body: lr.body.map(json_of).unwrap_or(Value::Null),
                        time_unix_nano: lr.time_unix_nano,
                        attrs: attrs(lr.attributes),
                    });
                }
            }
        }
    }

    async fn answer_delay(&self) {
        match self.delay_ms.load(Ordering::Relaxed) {
            0 => {}
            u64::MAX => std::future::pending::<()>().await,
            ms => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }

    fn records(&self) -> Vec<Received> {
        self.records.lock().unwrap().clone()
    }

    /// Waits (bounded) for the record whose `path` attribute is `path`.
    fn wait_path(&self, path: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| r.attrs["path"] == path) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no exported record for {path}; got {:?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn attrs(kvs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    kvs.into_iter()
        .map(|kv| (kv.key, kv.value.map(json_of).unwrap_or(Value::Null)))
        .collect()
}

fn json_of(v: AnyValue) -> Value {
    match v.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.into_iter().map(json_of).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            Value::Object(attrs(kv.values).into_iter().collect())
        }
        Some(any_value::Value::BytesValue(b)) => json!(b),
        _ => Value::Null,
    }
}

/// OTLP/HTTP: `POST /v1/logs` with a protobuf `ExportLogsServiceRequest`.
async fn http_receiver(inbox: Arc<Inbox>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let inbox = inbox.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/logs");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let msg = ExportLogsServiceRequest::decode(body).unwrap();
                        inbox.answer_delay().await;
                        inbox.take(msg, headers);
                        let resp = ExportLogsServiceResponse::default().encode_to_vec();
                        let mut r = http::Response::new(Full::new(Bytes::from(resp)));
                        r.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct GrpcLogs(Arc<Inbox>);

#[tonic::async_trait]
impl LogsService for GrpcLogs {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        self.0.answer_delay().await;
        self.0.take(request.into_inner(), headers);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// OTLP/gRPC: the collector's `LogsService` on tonic.
async fn grpc_receiver(inbox: Arc<Inbox>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(GrpcLogs(inbox)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    addr
}

struct Env {
    agent: Agent,
    origin: Origin,
    _dir: tempfile::TempDir,
}

/// An agent allowing `localhost`, exporting with `env`; a plain-HTTP origin.
async fn start(env: &[(&str, String)]) -> Env {
    let origin = Origin::start(OriginKind::Http, None).await;
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("otel test CA").write(dir.path());
    let mut b = Agent::with(
        &AgentConfig::loopback(&c, &k).transforms([Transform::allowlist(&["localhost"])]),
    );
    for (k, v) in env {
        b = b.env(k, v.clone());
    }
    Env {
        agent: b.start(),
        origin,
        _dir: dir,
    }
}

impl Env {
    async fn get(&self, host: &str, path: &str) -> u16 {
        http_request(self.agent.addr("http"), get(host, path))
            .await
            .status
    }

    fn local(&self) -> String {
        format!("localhost:{}", self.origin.port())
    }
}

/// Short batch delay, so records leave promptly.
fn quick(endpoint_var: &str, url: String) -> Vec<(&str, String)> {
    vec![
        (endpoint_var, url),
        ("OTEL_BLRP_SCHEDULE_DELAY", "20".into()),
    ]
}

#[test]
fn http_export_carries_the_audit_fields() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let inbox = Arc::new(Inbox::default());
        let addr = http_receiver(inbox.clone()).await;
        let mut vars = quick("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        vars.push(("OTEL_SERVICE_NAME", "agent-under-test".into()));
        vars.push((
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=ci,team=egress".into(),
        ));
        vars.push(("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k123".into()));
        let env = start(&vars).await;
        let host = env.local();
        assert_eq!(env.get(&host, "/exported").await, 200);
        assert_eq!(env.get("denied.example", "/refused").await, 403);

        let ok = inbox.wait_path("/exported");
        assert_eq!(ok.body, "request");
        assert_eq!(ok.severity_text, "INFO");
        assert_eq!(ok.severity_number, 9);
        assert_eq!(ok.scope, "iron-proxy/audit");
        assert_eq!(ok.resource["service.name"], "agent-under-test");
        assert_eq!(ok.resource["deployment.environment"], "ci");
        assert_eq!(ok.resource["team"], "egress");
        assert_eq!(ok.attrs["host"], host);
        assert_eq!(ok.attrs["method"], "GET");
        assert_eq!(ok.attrs["action"], "allow");
        assert_eq!(ok.attrs["status_code"], 200);
        assert_eq!(ok.attrs["mode"], "mitm");
        assert_eq!(ok.attrs["sni"], "");
        assert!(ok.attrs["duration_ms"].is_f64());
        assert!(
            ok.attrs["remote_addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert_eq!(ok.attrs["request_transforms"][0]["name"], "allowlist");
        assert_eq!(ok.attrs["request_transforms"][0]["action"], "allow");
        assert_eq!(ok.attrs["response_transforms"][0]["name"], "allowlist");
        assert!(!ok.attrs.contains_key("rejected_by"));
        // Timestamp = request start: not after the JSON line's time.
        let line = env.agent.audit_where(|a| a["path"] == "/exported");
        assert_eq!(line["remote_addr"], ok.attrs["remote_addr"]);
        assert!(ok.time_unix_nano > 0);

        let denied = inbox.wait_path("/refused");
        assert_eq!(denied.severity_text, "WARN");
        assert_eq!(denied.attrs["action"], "reject");
        assert_eq!(denied.attrs["status_code"], 403);
        assert_eq!(denied.attrs["rejected_by"], "allowlist");

        let headers = inbox.headers.lock().unwrap().clone();
        assert!(headers.iter().all(|h| h["x-collector-key"] == "k123"));
        let enabled = env
            .agent
            .json_lines()
            .into_iter()
            .find(|l| l["msg"] == "otel exporter enabled")
            .expect("startup line");
        assert_eq!(enabled["endpoint"], format!("http://{addr}/v1/logs"));
        assert_eq!(enabled["protocol"], "http/protobuf");
    });
}

#[test]
fn grpc_export_carries_the_audit_fields() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let inbox = Arc::new(Inbox::default());
        let addr = grpc_receiver(inbox.clone()).await;
        let mut vars = quick("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", format!("http://{addr}"));
        vars.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()));
        vars.push(("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=g456".into()));
        let env = start(&vars).await;
        let host = env.local();
        assert_eq!(env.get(&host, "/over-grpc").await, 200);
        let r = inbox.wait_path("/over-grpc");
        // iron-proxy's default service name.
        assert_eq!(r.resource["service.name"], "iron-proxy");
        assert_eq!(r.scope, "iron-proxy/audit");
        assert_eq!(r.body, "request");
        assert_eq!(r.attrs["host"], host);
        assert_eq!(r.attrs["action"], "allow");
        assert_eq!(r.attrs["status_code"], 200);
        assert_eq!(r.attrs["request_transforms"][0]["name"], "allowlist");
        let headers = inbox.headers.lock().unwrap().clone();
        assert!(headers.iter().all(|h| h["x-collector-key"] == "g456"));
    });
}

#[test]
fn queued_records_are_flushed_at_shutdown() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let inbox = Arc::new(Inbox::default());
        let addr = http_receiver(inbox.clone()).await;
        // A batch that would wait a minute: only the shutdown flush sends it.
        let vars = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_BLRP_SCHEDULE_DELAY", "60000".into()),
        ];
        let mut env = start(&vars).await;
        let host = env.local();
        assert_eq!(env.get(&host, "/last-words").await, 200);
        env.agent.audit_where(|a| a["path"] == "/last-words");
        assert!(inbox.records().is_empty());
        let status = env.agent.signal(libc::SIGTERM);
        assert!(status.success(), "{status:?}");
        assert_eq!(inbox.records().len(), 1, "{:?}", inbox.records());
        inbox.wait_path("/last-words");
    });
}

#[test]
fn slow_receiver_loses_nothing() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let inbox = Arc::new(Inbox::default());
        inbox.delay_ms.store(300, Ordering::Relaxed);
        let addr = http_receiver(inbox.clone()).await;
        let vars = quick("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        let env = start(&vars).await;
        let host = env.local();
        for i in 0..40 {
            assert_eq!(env.get(&host, &format!("/slow/{i}")).await, 200);
        }
        for i in 0..40 {
            inbox.wait_path(&format!("/slow/{i}"));
        }
        assert_eq!(inbox.records().len(), 40);
        // Counted once the collector's answer is in, just after it stored the records.
        let deadline = Instant::now() + Duration::from_secs(10);
        let m = loop {
            let m = scrape_metrics(env.agent.addr("metrics")).await;
            if m.value("iron_agent_otel_exported_total") == Some(40.0) || Instant::now() > deadline
            {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            m.value("iron_agent_otel_exported_total"),
            Some(40.0),
            "{}",
            m.text
        );
        assert_eq!(
            m.value(r#"iron_agent_otel_dropped_total{reason="queue_full"}"#),
            Some(0.0)
        );
        assert_eq!(
            m.value(r#"iron_agent_otel_dropped_total{reason="export_failed"}"#),
            Some(0.0)
        );
    });
}

#[test]
fn hung_receiver_never_blocks_requests_and_drops_are_counted() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let inbox = Arc::new(Inbox::default());
        inbox.delay_ms.store(u64::MAX, Ordering::Relaxed);
        let addr = http_receiver(inbox.clone()).await;
        let mut vars = quick("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        vars.push(("OTEL_BLRP_MAX_QUEUE_SIZE", "4".into()));
        vars.push(("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "2".into()));
        let env = start(&vars).await;
        let host = env.local();
        // The collector never answers: every request is still answered (a hang would trip the
        // generous per-request limit, which is not a timing assertion).
        for i in 0..60 {
            let r =
                tokio::time::timeout(Duration::from_secs(10), env.get(&host, &format!("/h/{i}")))
                    .await
                    .expect("request blocked behind the OTEL export");
            assert_eq!(r, 200);
        }
        env.agent
            .audits_where(60, |a| a["path"].as_str().unwrap_or("").starts_with("/h/"));
        let m = scrape_metrics(env.agent.addr("metrics")).await;
        // At most one batch in the hung export call and a full queue are held; the rest dropped.
        let dropped = m
            .value(r#"iron_agent_otel_dropped_total{reason="queue_full"}"#)
            .unwrap_or(0.0);
        assert!(
            dropped >= 60.0 - 4.0 - 2.0,
            "dropped {dropped}:\n{}",
            m.text
        );
        assert!(inbox.records().is_empty());
    });
}

#[test]
fn unsupported_protocol_exits_1_with_iron_proxys_message() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let vars = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9".to_string()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_string()),
        ];
        let mut env = start(&vars).await;
        let status = env.agent.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(1));
        assert!(
            env.agent.logs().contains(
                r#"error: unsupported OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" (expected "http/protobuf" or "grpc")"#
            ),
            "{}",
            env.agent.logs()
        );
    });
}

/// An OTLP/HTTP endpoint in trouble: reads each export and answers `status`. Counts the calls.
async fn failing_receiver(status: u16, calls: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let calls = calls.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        calls.fetch_add(1, Ordering::SeqCst);
                        let mut r = http::Response::new(Full::new(Bytes::from_static(b"busy")));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// With the collector at `endpoint` failing every export: each request is still answered
/// within a bound, and every record ends up counted as `export_failed` (none exported, none
/// silently lost), with a WARN line.
async fn failed_exports_are_counted(endpoint: String) {
    let mut vars = quick("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    vars.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".into()));
    let env = start(&vars).await;
    let host = env.local();
    const N: usize = 20;
    for i in 0..N {
        let r = tokio::time::timeout(Duration::from_secs(5), env.get(&host, &format!("/f/{i}")))
            .await
            .expect("request held up by the failing OTEL export");
        assert_eq!(r, 200);
    }
    let failed = r#"iron_agent_otel_dropped_total{reason="export_failed"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = scrape_metrics(env.agent.addr("metrics")).await;
        if m.value(failed) == Some(N as f64) || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(m.value(failed), Some(N as f64), "{}", m.text);
    assert_eq!(
        m.value(r#"iron_agent_otel_dropped_total{reason="queue_full"}"#),
        Some(0.0)
    );
    assert_eq!(m.value("iron_agent_otel_exported_total"), Some(0.0));
    let warn = env
        .agent
        .json_lines()
        .into_iter()
        .find(|l| l["msg"] == "otel export failed: records dropped")
        .unwrap_or_else(|| panic!("no export failure line:\n{}", env.agent.logs()));
    assert_eq!(warn["level"], "WARN");
    assert!(warn["records"].as_u64().unwrap() >= 1, "{warn}");
}

#[test]
fn collector_down_drops_are_counted_as_export_failed() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        // A closed port: every export is refused at connect.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        failed_exports_are_counted(format!("http://127.0.0.1:{port}")).await;
    });
}

#[test]
fn collector_answering_errors_drops_are_counted_as_export_failed() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let calls = Arc::new(AtomicU64::new(0));
        let addr = failing_receiver(503, calls.clone()).await;
        failed_exports_are_counted(format!("http://{addr}")).await;
        assert!(calls.load(Ordering::SeqCst) >= 1, "the collector was asked");
    });
}
