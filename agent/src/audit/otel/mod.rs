//! OTEL export of audit records (iron-proxy §17): every record the [`super::AuditSink`] takes is
//! also offered here, converted off the request path, batched and sent to an OTLP collector
//! over HTTP (protobuf) or gRPC. The JSON lines on stderr are written either way.
//!
//! Queue policy: a bounded queue (`OTEL_BLRP_MAX_QUEUE_SIZE`, default 2048 records) that the
//! request path only ever `try_send`s into. A full queue (collector slow or down) drops the
//! record and counts it (`iron_agent_otel_dropped_total{reason="queue_full"}`); a failed or
//! timed-out export counts its batch (`reason="export_failed"`). Nothing waits on the collector
//! except the export thread. At shutdown the queue is flushed, bounded by the caller's timeout.

mod convert;
mod http;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{Logger as _, LoggerProvider as _};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use parking_lot::Mutex;

use crate::metrics::Metrics;

pub use convert::Queued;
pub use settings::{Batching, OtelError, Protocol, Settings};

/// Instrumentation scope and default `service.name`: iron-proxy's, so collector-side queries
/// written for it keep matching.
const SCOPE: &str = "iron-proxy/audit";
const DEFAULT_SERVICE_NAME: &str = "iron-proxy";
/// Resource attribute holding the proxy's tags (managed mode).
pub const TAGS_ATTRIBUTE: &str = "iron.proxy.tags";
/// How often an idle export thread looks for a shutdown.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Minimum time between two "export failed" warnings.
const FAILURE_REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct OtelExport {
    tx: SyncSender<Queued>,
    /// Where dropped and exported records are counted (the agent's registry).
    metrics: Arc<Metrics>,
    closing: Arc<AtomicBool>,
    /// Signalled by the export thread when it has flushed and exited.
    done: Mutex<Option<Receiver<()>>>,
}

impl OtelExport {
    /// Starts export when the environment names an endpoint (`None`: export off). Call from
    /// inside the tokio runtime: the exporters' connections live on it.
    pub fn from_env(
        env: settings::Env<'_>,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Self>, OtelError> {
        match settings::from_env(env)? {
            Some(s) => Self::start(&s, metrics).map(Some),
            None => Ok(None),
        }
    }

    pub fn start(s: &Settings, metrics: &Arc<Metrics>) -> Result<Self, OtelError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| OtelError::Build(format!("no async runtime: {e}")))?;
        let mut exporter = build_exporter(s)?;
        let resource = resource(s);
        exporter.set_resource(&resource);
        let scope = InstrumentationScope::builder(SCOPE)
            .with_version(crate::VERSION)
            .build();
        // A provider without processors: it only makes records; the export thread batches.
        let provider = SdkLoggerProvider::builder().with_resource(resource).build();
        let logger = provider.logger_with_scope(scope.clone());
        let (tx, rx) = sync_channel(s.batching.max_queue);
        let closing = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = sync_channel(1);
        let worker = Worker {
            rx,
            exporter,
            logger,
            scope,
            batching: s.batching,
            closing: closing.clone(),
            handle,
            last_report: None,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                worker.run();
                let _ = done_tx.send(());
            })
            .map_err(OtelError::Thread)?;
        tracing::info!(
            endpoint = %settings::shown_endpoint(&s.endpoint),
            protocol = s.protocol.as_str(),
            "otel exporter enabled"
        );
        Ok(Self {
            tx,
            metrics: metrics.clone(),
            closing,
            done: Mutex::new(Some(done_rx)),
        })
    }

    /// Queues one record for export; never waits. A full queue drops it (counted).
    pub fn offer(&self, q: Queued) {
        match self.tx.try_send(q) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.otel_dropped("queue_full", 1);
            }
        }
    }

    /// Exports what is queued and stops the export thread, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        self.closing.store(true, Ordering::Relaxed);
        let Some(done) = self.done.lock().take() else {
            return;
        };
        if done.recv_timeout(timeout).is_err() {
            tracing::warn!("otel export: shutdown flush timed out; queued records dropped");
        }
    }
}

/// The exporter reads the endpoint, headers and timeout variables itself; with an ingest token
/// (managed mode) the endpoint is the resolved one and the token goes in as a header that
/// `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_LOGS_HEADERS` may override.
fn build_exporter(s: &Settings) -> Result<opentelemetry_otlp::LogExporter, OtelError> {
    let bearer = s.bearer.as_ref().map(|t| format!("Bearer {}", t.expose()));
    let built = match s.protocol {
        Protocol::HttpProtobuf => {
            let mut b = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(http::OtlpHttpClient::new()?);
            if let Some(bearer) = bearer {
                b = b
                    .with_endpoint(s.endpoint.clone())
                    .with_headers(HashMap::from([("authorization".to_string(), bearer)]));
            }
            b.build()
        }
        Protocol::Grpc => {
            let mut b = opentelemetry_otlp::LogExporter::builder().with_tonic();
            if let Some(bearer) = bearer {
                let mut md = tonic::metadata::MetadataMap::new();
                let value = bearer.parse().map_err(|_| {
                    OtelError::Build("the ingest token is not a valid header".into())
                })?;
                md.insert("authorization", value);
                b = b.with_endpoint(s.endpoint.clone()).with_metadata(md);
            }
            b.build()
        }
    };
    built.map_err(|e| OtelError::Build(e.to_string()))
}

/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK's detectors), the SDK's
/// own attributes, and iron-proxy's default service name.
fn resource(s: &Settings) -> Resource {
    let mut b = Resource::builder();
    if !s.tags.is_empty() {
        let tags = s.tags.iter().cloned().map(StringValue::from).collect();
        b = b.with_attribute(KeyValue::new(
            TAGS_ATTRIBUTE,
            Value::Array(Array::String(tags)),
        ));
    }
    if s.service_name_given {
        b.build()
    } else {
        b.with_service_name(DEFAULT_SERVICE_NAME).build()
    }
}

/// The export thread: batches from the queue and exports them one call at a time.
struct Worker {
    rx: Receiver<Queued>,
    exporter: opentelemetry_otlp::LogExporter,
    logger: SdkLogger,
    scope: InstrumentationScope,
    batching: Batching,
    closing: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
    last_report: Option<Instant>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batching.max_batch);
        loop {
            match self.rx.recv_timeout(IDLE_POLL) {
                Ok(q) => batch.push(q),
                Err(RecvTimeoutError::Timeout) if !self.closing.load(Ordering::Relaxed) => {
                    continue;
                }
                // Closing with nothing queued, or the sink is gone.
                Err(_) => break,
            }
            self.fill(&mut batch);
            self.export(&mut batch);
        }
        let _ = self.exporter.shutdown_with_timeout(Duration::from_secs(1));
    }

    /// Lets the batch fill for the schedule delay (not when closing), up to the batch size.
    fn fill(&self, batch: &mut Vec<Queued>) {
        let deadline = Instant::now() + self.batching.delay;
        while batch.len() < self.batching.max_batch {
            if self.closing.load(Ordering::Relaxed) {
                match self.rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => return,
                }
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.rx.recv_timeout((deadline - now).min(IDLE_POLL)) {
                Ok(q) => batch.push(q),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn export(&mut self, batch: &mut Vec<Queued>) {
        let observed = SystemTime::now();
        let records: Vec<SdkLogRecord> = batch
            .drain(..)
            .map(|q| {
                let mut r = self.logger.create_log_record();
                convert::fill(&mut r, &q, observed);
                r
            })
            .collect();
        let n = records.len() as u64;
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        let limit = self.batching.export_timeout;
        let exporter = &self.exporter;
        let result = self.handle.block_on(async move {
            tokio::time::timeout(limit, exporter.export(LogBatch::new(&refs))).await
        });
        let failure = match result {
            Ok(Ok(())) => {
                self.metrics.otel_exported(n);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {} ms", limit.as_millis()),
        };
        self.metrics.otel_dropped("export_failed", n);
        if self
            .last_report
            .is_none_or(|t| t.elapsed() >= FAILURE_REPORT_EVERY)
        {
            tracing::warn!(records = n, error = %failure, "otel export failed: records dropped");
            self.last_report = Some(Instant::now());
        }
    }
}
