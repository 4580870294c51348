//! Forwarding accepted batches to an OTLP/HTTP collector (`IRON_CONTROL_AUDIT_OTLP_ENDPOINT`,
//! the full logs URL, e.g. `http://collector:4318/v1/logs`), so audit lands in whatever backend
//! the fleet uses (Loki, ClickHouse, any OTLP store). Each resource gets the proxy's id and
//! tags as attributes (`iron.proxy.id`, `iron.proxy.tags`).
//!
//! Off the request path: accepted batches go into a bounded queue ([`QUEUE`] batches) that a
//! background task sends one at a time (protobuf, [`TIMEOUT`] each). A full queue or a failed
//! send drops the batch (the ring still has it) and logs a warning at most every
//! [`REPORT_EVERY`]; a proxy's export never waits for the collector.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tokio::sync::mpsc;

pub const QUEUE: usize = 256;
pub const TIMEOUT: Duration = Duration::from_secs(10);
const REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("IRON_CONTROL_AUDIT_OTLP_ENDPOINT: {0}")]
    Endpoint(String),
    #[error("IRON_CONTROL_AUDIT_OTLP_ENDPOINT: loading the system trust roots: {0}")]
    Roots(#[from] std::io::Error),
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Forwarder {
    tx: mpsc::Sender<Bytes>,
}

impl Forwarder {
    /// Checks `url` and starts the sending task (inside the runtime).
    pub fn start(url: &str) -> Result<Self, ForwardError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| ForwardError::Endpoint(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ForwardError::Endpoint(
                "expected an http:// or https:// URL with a host".into(),
            ));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        let client: HttpsClient = Client::builder(TokioExecutor::new()).build(https);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, uri, rx));
        Ok(Self { tx })
    }

    /// Queues a copy of `req` attributed to the proxy; never waits.
    pub fn offer(&self, mut req: ExportLogsServiceRequest, proxy_id: &str, tags: &[String]) {
        enrich(&mut req, proxy_id, tags);
        if self.tx.try_send(Bytes::from(req.encode_to_vec())).is_err() {
            tracing::warn!(
                proxy_id,
                "audit forwarding queue full: batch not forwarded (kept in the ring)"
            );
        }
    }
}

/// Adds `iron.proxy.id` and `iron.proxy.tags` to every resource (replacing sender-set ones).
pub fn enrich(req: &mut ExportLogsServiceRequest, proxy_id: &str, tags: &[String]) {
    let s = |v: &str| AnyValue {
        value: Some(Av::StringValue(v.to_string())),
    };
    for rl in &mut req.resource_logs {
        let res = rl.resource.get_or_insert_with(Resource::default);
        res.attributes
            .retain(|kv| kv.key != "iron.proxy.id" && kv.key != "iron.proxy.tags");
        res.attributes.push(KeyValue {
            key: "iron.proxy.id".into(),
            value: Some(s(proxy_id)),
            ..KeyValue::default()
        });
        res.attributes.push(KeyValue {
            key: "iron.proxy.tags".into(),
            value: Some(AnyValue {
                value: Some(Av::ArrayValue(ArrayValue {
                    values: tags.iter().map(|t| s(t)).collect(),
                })),
            }),
            ..KeyValue::default()
        });
    }
}

async fn run(client: HttpsClient, uri: http::Uri, mut rx: mpsc::Receiver<Bytes>) {
    let mut last_report: Option<Instant> = None;
    while let Some(body) = rx.recv().await {
        let failure = match send(&client, &uri, body).await {
            Ok(()) => continue,
            Err(e) => e,
        };
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            tracing::warn!(error = %failure, "audit forwarding to the OTLP collector failed: batch dropped (kept in the ring)");
            last_report = Some(Instant::now());
        }
    }
}

async fn send(client: &HttpsClient, uri: &http::Uri, body: Bytes) -> Result<(), String> {
    let req = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(format!("{e}")),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("collector answered {}", resp.status())),
    }
}
