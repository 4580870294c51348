//! Audit ingest: `POST /v1/logs` with a proxy's ingest token (protobuf, JSON, gzip), the
//! records attributed to the proxy's id and tags, `GET /api/v1/audit` filters, the ring bound,
//! refusals that store nothing, and forwarding to an OTLP collector.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message as _;
use serde_json::{Value, json};

use crate::support::{Api, Resp, api, server};

const PB: (&str, &str) = ("content-type", "application/x-protobuf");
const JS: (&str, &str) = ("content-type", "application/json");

fn kv(k: &str, v: Av) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

/// One audit record the way the agent's exporter shapes it.
fn record(host: &str, action: &str, status: i64) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_780_308_000_000_000_000,
        severity_text: if action == "reject" { "WARN" } else { "INFO" }.into(),
        body: Some(AnyValue {
            value: Some(Av::StringValue("request".into())),
        }),
        attributes: vec![
            kv("host", Av::StringValue(host.into())),
            kv("method", Av::StringValue("GET".into())),
            kv("path", Av::StringValue("/x".into())),
            kv("action", Av::StringValue(action.into())),
            kv("status_code", Av::IntValue(status)),
            // A sender's own claim of tags is kept as an attribute, never used for filters.
            kv("tags", Av::StringValue("env:forged".into())),
        ],
        ..LogRecord::default()
    }
}

fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

/// A proxy with `tags`; returns (id, proxy token, ingest token from its sync).
async fn proxy(api: &Api, tags: &[&str]) -> (String, String, String) {
    let r = api
        .post(
            "/api/v1/proxies",
            json!({"data": {"name": "edge", "tags": tags}}),
        )
        .await;
    r.expect(201);
    let token = r.data()["token"].as_str().unwrap().to_owned();
    let s = api.sync(&token, None).await;
    s.expect(200);
    assert_eq!(s.json["tags"], json!(tags));
    let ingest = s.json["ingest_token"].as_str().unwrap().to_owned();
    (r.id(), token, ingest)
}

async fn post(api: &Api, token: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = headers.to_vec();
    if !token.is_empty() {
        h.push(("authorization", auth.as_str()));
    }
    api.with_key("")
        .raw_bytes("POST", "/v1/logs", Some(Bytes::from(body)), &h)
        .await
}

async fn audit(api: &Api, query: &str) -> Value {
    let r = api.get(&format!("/api/v1/audit{query}")).await;
    r.expect(200);
    r.json
}

fn hosts(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn protobuf_json_and_gzip_records_are_attributed_and_queried() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let (prod_id, prod_token, prod) = proxy(&api, &["env:prod", "svc:checkout"]).await;
        let (_, _, dev) = proxy(&api, &["env:dev"]).await;
        // Stable across syncs, hash-only answers included, and not the proxy token.
        let again = api.sync(&prod_token, None).await;
        let h = again.json["config_hash"].as_str().unwrap().to_owned();
        assert_eq!(again.json["ingest_token"], prod.as_str());
        let hash_only = api.sync(&prod_token, Some(&h)).await;
        assert!(hash_only.json.get("secrets").is_none());
        assert_eq!(hash_only.json["ingest_token"], prod.as_str());
        assert!(prod.starts_with("iing_") && prod != prod_token);

        let pb = request(vec![
            record("api.example.com:443", "allow", 200),
            record("blocked.example", "reject", 403),
        ]);
        let r = post(&api, &prod, pb.encode_to_vec(), &[PB]).await;
        r.expect(200);
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        let js = serde_json::to_vec(&request(vec![record("json.example", "allow", 200)])).unwrap();
        let text = String::from_utf8(js.clone()).unwrap();
        assert!(
            text.contains("\"resourceLogs\""),
            "OTLP/JSON field names: {text}"
        );
        post(&api, &dev, js, &[JS]).await.expect(200);
        let gz = gzip(&request(vec![record("gzip.example", "reject", 403)]).encode_to_vec());
        post(&api, &prod, gz, &[PB, ("content-encoding", "gzip")])
            .await
            .expect(200);

        let all = audit(&api, "").await;
        assert_eq!(
            hosts(&all),
            [
                "gzip.example",
                "json.example",
                "blocked.example",
                "api.example.com:443"
            ]
        );
        assert_eq!(all["meta"]["total"], 4);
        let first = &all["data"][3];
        assert_eq!(first["proxy_id"], prod_id.as_str());
        assert_eq!(first["tags"], json!(["env:prod", "svc:checkout"]));
        assert_eq!(first["action"], "allow");
        assert_eq!(first["status_code"], 200);
        assert_eq!(first["method"], "GET");
        assert_eq!(first["time"], "2026-06-01T10:00:00.000Z");
        assert_eq!(first["attributes"]["path"], "/x");

        let q = |s: &'static str| {
            let api = api.clone();
            async move { hosts(&audit(&api, s).await) }
        };
        assert_eq!(
            q("?tags=env:prod").await,
            ["gzip.example", "blocked.example", "api.example.com:443"]
        );
        assert_eq!(
            q("?tags=env:prod&action=reject").await,
            ["gzip.example", "blocked.example"]
        );
        assert_eq!(
            q("?tags=env:prod,svc:checkout&host=api.example.com").await,
            ["api.example.com:443"]
        );
        assert!(q("?tags=env:forged").await.is_empty());
        assert_eq!(q("?tags=env:dev").await, ["json.example"]);
        let by_proxy = audit(&api, &format!("?proxy_id={prod_id}&limit=1")).await;
        assert_eq!(hosts(&by_proxy), ["gzip.example"]);
        assert_eq!(by_proxy["meta"]["total"], 3);
        assert!(q("?since=2026-06-01T10:00:01Z").await.is_empty());
        assert_eq!(q("?since=2026-06-01T10:00:00Z").await.len(), 4);
        api.get("/api/v1/audit?since=yesterday").await.expect(400);
        api.with_key("").get("/api/v1/audit").await.expect(401);
    });
}

#[test]
fn refused_requests_store_nothing() {
    let s = server()
        .env("IRON_CONTROL_AUDIT_MAX_BODY_BYTES", "2048")
        .start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let (px, proxy_token, ingest) = proxy(&api, &["env:prod"]).await;
        let good = request(vec![record("a.example", "allow", 200)]).encode_to_vec();
        // Unauthenticated: none, a wrong token, the proxy token, an API key.
        for t in [
            "",
            "iing_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            post(&api, t, good.clone(), &[PB]).await.expect(401);
        }
        post(&api, &proxy_token, good.clone(), &[PB])
            .await
            .expect(401);
        post(&api, &api.key.clone(), good.clone(), &[PB])
            .await
            .expect(401);
        // Malformed: bad protobuf, bad JSON, a body that is not gzip.
        post(&api, &ingest, vec![0xff, 0xff, 0xff, 0x0f], &[PB])
            .await
            .expect(400);
        let r = post(&api, &ingest, b"{\"resourceLogs\": 7}".to_vec(), &[JS]).await;
        r.expect(400);
        assert_eq!(r.code(), "bad_request");
        post(
            &api,
            &ingest,
            good.clone(),
            &[PB, ("content-encoding", "gzip")],
        )
        .await
        .expect(400);
        // Oversized: on the wire, and only once decompressed.
        let big = request(
            (0..40)
                .map(|i| record(&format!("h{i}.example"), "allow", 200))
                .collect(),
        );
        let big = big.encode_to_vec();
        assert!(big.len() > 2048);
        let r = post(&api, &ingest, big.clone(), &[PB]).await;
        r.expect(413);
        assert_eq!(r.code(), "payload_too_large");
        let gz = gzip(&big);
        assert!(gz.len() < 2048, "compressed {}", gz.len());
        post(&api, &ingest, gz, &[PB, ("content-encoding", "gzip")])
            .await
            .expect(413);
        // Not an OTLP encoding.
        post(
            &api,
            &ingest,
            good.clone(),
            &[("content-type", "text/plain")],
        )
        .await
        .expect(415);
        post(
            &api,
            &ingest,
            good.clone(),
            &[PB, ("content-encoding", "br")],
        )
        .await
        .expect(415);
        assert_eq!(audit(&api, "").await["meta"]["total"], 0);

        // A deleted proxy's token stops working.
        post(&api, &ingest, good.clone(), &[PB]).await.expect(200);
        api.delete(&format!("/api/v1/proxies/{px}"))
            .await
            .expect(204);
        post(&api, &ingest, good, &[PB]).await.expect(401);
        assert_eq!(audit(&api, "").await["meta"]["total"], 1);
    });
}

#[test]
fn the_ring_keeps_the_newest_events() {
    let s = server().env("IRON_CONTROL_AUDIT_RING_SIZE", "3").start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let (_, _, ingest) = proxy(&api, &["env:prod"]).await;
        for batch in [vec!["h1", "h2"], vec!["h3", "h4", "h5"]] {
            let req = request(batch.iter().map(|h| record(h, "allow", 200)).collect());
            post(&api, &ingest, req.encode_to_vec(), &[PB])
                .await
                .expect(200);
        }
        let all = audit(&api, "").await;
        assert_eq!(hosts(&all), ["h5", "h4", "h3"]);
        assert_eq!(all["meta"]["total"], 3);
    });
}

#[test]
fn accepted_batches_are_forwarded_with_the_proxy_attributes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = got.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        sink.lock().unwrap().push((path, body));
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let s = server()
        .env(
            "IRON_CONTROL_AUDIT_OTLP_ENDPOINT",
            format!("http://{addr}/v1/logs"),
        )
        .start();
    let px = rt.block_on(async {
        let api = api(&s);
        let (px, _, ingest) = proxy(&api, &["env:prod", "team:a"]).await;
        let req = request(vec![record("fwd.example", "reject", 403)]);
        post(&api, &ingest, req.encode_to_vec(), &[PB])
            .await
            .expect(200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing forwarded");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        px
    });
    let (path, body) = got.lock().unwrap()[0].clone();
    assert_eq!(path, "/v1/logs");
    let fwd = ExportLogsServiceRequest::decode(body).unwrap();
    let res = fwd.resource_logs[0].resource.as_ref().unwrap();
    let attr = |k: &str| {
        res.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert!(matches!(attr("iron.proxy.id"), Some(Av::StringValue(id)) if id == px));
    let Some(Av::ArrayValue(tags)) = attr("iron.proxy.tags") else {
        panic!("no tags attribute")
    };
    let tags: Vec<_> = tags
        .values
        .iter()
        .filter_map(|v| match &v.value {
            Some(Av::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(tags, ["env:prod", "team:a"]);
    assert_eq!(fwd.resource_logs[0].scope_logs[0].log_records.len(), 1);
}
