//! `/metrics`, `/healthz` and `/readyz` on the metrics listener of the running agent: the page
//! is scraped and parsed after real traffic, and readiness is watched through a slow startup
//! and a drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use iron_agent_tests::client::get;
use iron_agent_tests::config::{Dns, Metrics};
use iron_agent_tests::{
    Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request, https_request,
};
use serde_json::json;

/// A parsed Prometheus text page.
pub struct Scrape {
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (key, value) = l.rsplit_once(' ').expect("sample line");
                let value = value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("value: {l}"));
                (key.to_string(), value)
            })
            .collect();
        Scrape { text, samples }
    }

    /// The sample `key` (name and labels exactly as written).
    pub fn value(&self, key: &str) -> Option<f64> {
        self.samples.get(key).copied()
    }

    /// The sum of every sample of `name` whose labels contain all of `labels`.
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                    && labels.iter().all(|l| k.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The `hash` label of `iron_agent_config_info` (exactly one sample expected).
    pub fn config_hash(&self) -> String {
        let info: Vec<&String> = self
            .samples
            .keys()
            .filter(|k| k.starts_with("iron_agent_config_info{"))
            .collect();
        assert_eq!(info.len(), 1, "one config in force:\n{}", self.text);
        info[0]
            .strip_prefix(r#"iron_agent_config_info{hash=""#)
            .and_then(|r| r.strip_suffix(r#""}"#))
            .unwrap_or_else(|| panic!("config_info labels: {}", info[0]))
            .to_string()
    }

    fn declares(&self, family: &str, kind: &str) -> bool {
        self.text.contains(&format!("# TYPE {family} {kind}\n"))
    }
}

pub async fn scrape_metrics(addr: SocketAddr) -> Scrape {
    let r = http_request(addr, get("metrics", "/metrics")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    Scrape::parse(r.text())
}

#[test]
fn families_are_present_and_count_traffic() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mitm = TestCa::new("metrics MITM CA");
        let (c, k) = mitm.write(dir.path());
        let origin_ca = TestCa::new("metrics origin CA");
        let ca_path = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, &origin_ca.cert_pem).unwrap();
        let origin = Origin::start(OriginKind::Http, None).await;
        let tls_origin = Origin::start(
            OriginKind::Https {
                names: vec!["localhost".into()],
            },
            Some(&origin_ca),
        )
        .await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let cfg = AgentConfig::loopback(&c, &k)
            .transforms([
                Transform::allowlist(&["localhost"]),
                // Never set: its fetch fails at startup.
                Transform::secrets(json!([{
                    "source": {"type": "env", "var": "IRON_METRICS_TEST_NEVER_SET"},
                    "inject": {"header": "X-Key"},
                    "rules": [{"host": "nowhere.test"}],
                }])),
            ])
            .with(|c| {
                c.dns = Dns {
                    enabled: Some(true),
                    listen: Some("127.0.0.1:0".into()),
                    proxy_ip: Some("10.9.8.7".into()),
                    ..Dns::default()
                }
            });
        let agent = Agent::with(&cfg)
            .env("SSL_CERT_FILE", ca_path.to_string_lossy())
            .start();
        let http = agent.addr("http");
        let host = format!("localhost:{}", origin.port());
        assert_eq!(http_request(http, get(&host, "/m/ok")).await.status, 200);
        assert_eq!(http_request(http, get(&host, "/m/ok2")).await.status, 200);
        assert_eq!(
            http_request(http, get("blocked.test", "/m/no"))
                .await
                .status,
            403
        );
        let refused = format!("localhost:{closed_port}");
        assert_eq!(
            http_request(http, get(&refused, "/m/err")).await.status,
            502
        );
        // Two MITM requests for one name: one mint (miss), then a cache hit.
        let tls_host = format!("localhost:{}", tls_origin.port());
        for path in ["/m/tls1", "/m/tls2"] {
            let r = https_request(
                agent.addr("https"),
                "localhost",
                mitm.client_config(),
                get(&tls_host, path),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200);
        }
        let dns = agent.addr("dns");
        iron_agent_tests::dns::udp(dns, "anything.test.", RecordType::A).await;
        iron_agent_tests::dns::udp(dns, "anything.test.", RecordType::AAAA).await;
        agent.wait_audits(6);

        let m = scrape_metrics(agent.addr("metrics")).await;
        for (family, kind) in [
            ("iron_agent_requests", "counter"),
            ("iron_agent_request_duration_seconds", "histogram"),
            ("iron_agent_transform_actions", "counter"),
            ("iron_agent_upstream_errors", "counter"),
            ("iron_agent_tls_leaf_cache", "counter"),
            ("iron_agent_tls_leaf_mints", "counter"),
            ("iron_agent_dns_queries", "counter"),
            ("iron_agent_secret_refresh_failures", "counter"),
            ("iron_agent_audit_dropped", "counter"),
            ("iron_agent_otel_exported", "counter"),
            ("iron_agent_otel_dropped", "counter"),
            ("iron_agent_reloads", "counter"),
            ("iron_agent_config_info", "gauge"),
        ] {
            assert!(m.declares(family, kind), "{family} {kind}:\n{}", m.text);
        }
        let req = "iron_agent_requests_total";
        assert_eq!(
            m.sum(req, &[r#"action="allow""#, r#"policy="""#]),
            4.0,
            "{}",
            m.text
        );
        assert_eq!(m.sum(req, &[r#"action="reject""#]), 1.0);
        assert_eq!(m.sum(req, &[r#"action="error""#]), 1.0);
        assert_eq!(m.sum(req, &[r#"protocol="http/1.1""#]), 6.0);
        assert_eq!(
            m.value(r#"iron_agent_request_duration_seconds_count{action="allow"}"#),
            Some(4.0)
        );
        assert_eq!(
            m.value(r#"iron_agent_request_duration_seconds_bucket{le="+Inf",action="allow"}"#)
                .or(m.value(
                    r#"iron_agent_request_duration_seconds_bucket{action="allow",le="+Inf"}"#
                )),
            Some(4.0),
            "{}",
            m.text
        );
        let tr = "iron_agent_transform_actions_total";
        assert_eq!(
            m.sum(
                tr,
                &[
                    r#"transform="allowlist""#,
                    r#"phase="request""#,
                    r#"action="reject""#
                ]
            ),
            1.0
        );
        assert_eq!(
            m.sum(
                tr,
                &[
                    r#"transform="allowlist""#,
                    r#"phase="request""#,
                    r#"action="allow""#
                ]
            ),
            5.0
        );
        assert_eq!(
            m.value(r#"iron_agent_upstream_errors_total{kind="connect_refused"}"#),
            Some(1.0),
            "{}",
            m.text
        );
        assert_eq!(
            m.value(r#"iron_agent_tls_leaf_cache_total{result="miss"}"#),
            Some(1.0)
        );
        assert!(
            m.value(r#"iron_agent_tls_leaf_cache_total{result="hit"}"#)
                .unwrap()
                >= 1.0
        );
        assert_eq!(m.value("iron_agent_tls_leaf_mints_total"), Some(1.0));
        assert_eq!(
            m.value(r#"iron_agent_dns_queries_total{qtype="A",answer="records"}"#),
            Some(1.0),
            "{}",
            m.text
        );
        assert_eq!(
            m.value(r#"iron_agent_dns_queries_total{qtype="AAAA",answer="nodata"}"#),
            Some(1.0)
        );
        assert!(
            m.value(r#"iron_agent_secret_refresh_failures_total{kind="env"}"#)
                .unwrap()
                >= 1.0
        );
        assert_eq!(m.value("iron_agent_audit_dropped_total"), Some(0.0));
        assert_eq!(m.value("iron_agent_otel_exported_total"), Some(0.0));
        assert_eq!(
            m.value(r#"iron_agent_otel_dropped_total{reason="queue_full"}"#),
            Some(0.0)
        );
        assert_eq!(
            m.value(r#"iron_agent_reloads_total{result="success"}"#),
            Some(0.0)
        );
        assert_eq!(
            m.value(r#"iron_agent_reloads_total{result="failure"}"#),
            Some(0.0)
        );
        // The config in force, by the hash of its file.
        let info: Vec<&String> = m
            .samples
            .keys()
            .filter(|k| k.starts_with("iron_agent_config_info{"))
            .collect();
        assert_eq!(info.len(), 1, "{}", m.text);
        assert!(info[0].starts_with(r#"iron_agent_config_info{hash="sha256:"#));
        assert_eq!(
            info[0].len(),
            r#"iron_agent_config_info{hash="sha256:"}"#.len() + 64
        );
        // No eBPF here: no kernel families.
        assert!(!m.text.contains("iron_agent_ebpf_"));
    });
}

/// `/metrics` without an async runtime (the eBPF tests are synchronous).
pub fn scrape_metrics_blocking(addr: SocketAddr) -> Scrape {
    let (status, body) = probe(addr, "/metrics").expect("metrics listener answers");
    assert_eq!(status, 200);
    Scrape::parse(body)
}

/// `GET path` on a plain connection: the status, or `None` when nothing answers.
fn probe(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// A 1Password Connect server that takes `hold` to close each connection unanswered.
async fn slow_secret_server(hold: Duration) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                drop(s);
            });
        }
    });
    addr
}

/// An upstream that accepts and never answers.
async fn silent_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[test]
fn readyz_follows_startup_and_drain() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("readyz CA").write(dir.path());
        let slow = slow_secret_server(Duration::from_millis(2500)).await;
        let upstream = silent_upstream().await;
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let metrics = free.local_addr().unwrap();
        drop(free);
        let cfg = AgentConfig::loopback(&c, &k)
            .transforms([
                Transform::allowlist(&["localhost"]),
                Transform::secrets(json!([{
                    "source": {"type": "1password_connect", "secret_ref": "op://v/i/f"},
                    "inject": {"header": "X-Key"},
                    "rules": [{"host": "nowhere.test"}],
                }])),
            ])
            .with(|c| {
                c.metrics = Some(Metrics {
                    listen: metrics.to_string(),
                })
            });

        // Watch /readyz from before the start to after the exit.
        let seen = Arc::new(Mutex::new(Vec::<(u16, String)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((status, body)) = probe(metrics, "/readyz") {
                        let mut s = seen.lock().unwrap();
                        if s.last().map(|l| l.0) != Some(status) {
                            s.push((status, body));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let mut agent = Agent::with(&cfg)
            .env("OP_CONNECT_HOST", format!("http://{slow}"))
            .env("OP_CONNECT_TOKEN", "t")
            .start();
        assert_eq!(agent.addr("metrics"), metrics);
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().last().map(|l| l.0) != Some(200) {
            assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(probe(metrics, "/healthz").unwrap().0, 200);

        // A request held by a silent upstream keeps the drain going for a while.
        let http = agent.addr("http");
        let host = format!("localhost:{}", upstream.port());
        let held = tokio::spawn(async move { http_request(http, get(&host, "/held")).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = agent.signal(libc::SIGTERM);
        assert!(status.success(), "{status:?}");
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        let _ = held.await;

        let seen = seen.lock().unwrap().clone();
        let statuses: Vec<u16> = seen.iter().map(|s| s.0).collect();
        assert_eq!(statuses, [503, 200, 503], "{seen:?}");
        assert!(seen[0].1.contains("listeners"), "{seen:?}");
        assert!(seen[2].1.contains("shutting down"), "{seen:?}");
    });
}

/// A log collector that stops reading stderr: requests are still answered promptly, and the
/// audit records that no longer fit the writer's bounded batch are dropped and counted in
/// `iron_agent_audit_dropped_total` (while `iron_agent_requests_total` still counts them all);
/// once stderr is read again the writer reports the drops in a WARN line.
#[test]
fn stalled_stderr_drops_audit_records_and_counts_them() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("audit drop CA").write(dir.path());
        let origin = Origin::start(OriginKind::Http, None).await;
        let cfg = AgentConfig::loopback(&c, &k).transforms([Transform::allowlist(&["localhost"])]);
        let agent = Agent::with(&cfg).start();
        let host = format!("localhost:{}", origin.port());
        // Long paths make big records: the 8 MiB batch fills after about a thousand.
        let long = "p".repeat(8000);
        let tcp = tokio::net::TcpStream::connect(agent.addr("http"))
            .await
            .unwrap();
        let (mut conn, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(driver);
        agent.pause_stderr();
        let mut sent = 0u32;
        let dropped = loop {
            for _ in 0..200 {
                sent += 1;
                let req = get(&host, &format!("/{long}/{sent}"));
                let exchange = async {
                    conn.ready().await?;
                    conn.send_request(req).await
                };
                let r = tokio::time::timeout(Duration::from_secs(10), exchange)
                    .await
                    .expect("a request waited on the stalled audit log")
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
            }
            let m = scrape_metrics(agent.addr("metrics")).await;
            let dropped = m.value("iron_agent_audit_dropped_total").unwrap();
            if dropped > 0.0 || sent >= 6000 {
                break dropped;
            }
        };
        assert!(
            dropped > 0.0,
            "no drop after {sent} records with stderr stalled"
        );
        // Every request is counted, dropped record or not (the last one is counted just
        // after its answer: wait for it, bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = scrape_metrics(agent.addr("metrics")).await;
            let counted = m.sum("iron_agent_requests_total", &[r#"action="allow""#]);
            if counted == f64::from(sent) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{counted} of {sent} requests counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.resume_stderr();
        assert!(
            agent.wait_for_log("audit log writer fell behind: records dropped"),
            "no drop report once stderr was read again"
        );
    });
}
