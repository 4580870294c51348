//! `tls.mode: sni-only` end to end: TLS passes through untouched (the client trusts only the
//! origin's CA; the agent has none), judged by the ClientHello's server name, including a
//! ClientHello split across many TCP segments, and the tunnel's TLS branch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iron_agent_tests::client::get;
use iron_agent_tests::config::{Dns, Metrics, Proxy, Tls};
use iron_agent_tests::curl::curl;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, https_request};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Env {
    agent: Agent,
    origin_ca: TestCa,
    origin_ca_path: String,
    /// HTTPS origin for `sni.test` on 127.0.0.x:443 (sni-only dials port 443).
    on_443: Origin,
    /// HTTPS origin for `localhost` on an ephemeral port (reached through the tunnel).
    local: Origin,
    _dir: tempfile::TempDir,
}

/// An HTTPS origin on port 443 of some 127.0.0.x not in use (root can bind it; tests must not
/// collide with each other or with anything else listening on 127.0.0.1:443).
async fn origin_on_443(ca: &TestCa, name: &str) -> Origin {
    let seed = std::process::id() as usize
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as usize;
    for i in 0..50 {
        let ip = format!(
            "127.0.{}.{}",
            100 + (seed + i) % 100,
            2 + (seed / 7 + i) % 250
        );
        let addr: SocketAddr = format!("{ip}:443").parse().unwrap();
        if std::net::TcpListener::bind(addr).is_ok() {
            return Origin::start_on(
                addr,
                OriginKind::Https {
                    names: vec![name.into()],
                },
                Some(ca),
            )
            .await;
        }
    }
    panic!("no free 127.0.x.y:443 to bind");
}

async fn start() -> Env {
    start_with(Some(Vec::new())).await
}

/// `deny` is `upstream_deny_cidrs` (`None`: the default, which covers loopback).
async fn start_with(deny: Option<Vec<String>>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("sni-only origin CA");
    let origin_ca_path = dir.path().join("origin-ca.pem");
    std::fs::write(&origin_ca_path, &origin_ca.cert_pem).unwrap();
    let on_443 = origin_on_443(&origin_ca, "sni.test").await;
    let local = Origin::start(
        OriginKind::Https {
            names: vec!["localhost".into()],
        },
        Some(&origin_ca),
    )
    .await;
    let ip = on_443.addr.ip().to_string();
    let zone = iron_agent_tests::dns::fake_zone(&[
        ("sni.test", ip.as_str()),
        ("restricted.test", ip.as_str()),
    ])
    .await;
    // No CA anywhere in the config: sni-only never terminates TLS.
    let config = AgentConfig {
        dns: Dns {
            enabled: Some(false),
            upstream_resolver: Some(zone.to_string()),
            ..Dns::default()
        },
        proxy: Proxy {
            upstream_deny_cidrs: deny,
            ..Proxy::any_port()
        },
        tls: Tls {
            mode: Some("sni-only".into()),
            ..Tls::default()
        },
        mcp: None,
        mcp_gateway: None,
        metrics: Some(Metrics::any_port()),
        transforms: vec![Transform::new(
            "allowlist",
            json!({
                "domains": ["sni.test", "localhost"],
                "rules": [{"host": "restricted.test", "methods": ["GET"]}],
            }),
        )],
        intercept: None,
        log: None,
        postgres: None,
    }
    .tunnel_listener();
    let agent = Agent::with(&config).start();
    Env {
        agent,
        origin_ca,
        origin_ca_path: origin_ca_path.to_string_lossy().into_owned(),
        on_443,
        local,
        _dir: dir,
    }
}

/// A TCP relay to `to` that forwards the client's first bytes in `piece`-byte segments with a
/// pause between them, so the agent sees the ClientHello arrive in many reads. Counts pieces.
async fn chunking_relay(to: SocketAddr, piece: usize, pieces: Arc<AtomicUsize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((client, _)) = l.accept().await else {
            return;
        };
        let upstream = TcpStream::connect(to).await.unwrap();
        client.set_nodelay(true).unwrap();
        upstream.set_nodelay(true).unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let up = async move {
            let mut buf = [0u8; 8192];
            let mut first = true;
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if first {
                    for p in buf[..n].chunks(piece) {
                        if uw.write_all(p).await.is_err() {
                            return;
                        }
                        pieces.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    first = false;
                } else if uw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            let _ = uw.shutdown().await;
        };
        let down = async move {
            let _ = tokio::io::copy(&mut ur, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        tokio::join!(up, down);
    });
    addr
}

#[test]
fn https_listener_passes_tls_through() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let https = env.agent.addr("https");

        // The client trusts only the origin's CA: the handshake can only succeed end to end.
        let r = https_request(
            https,
            "sni.test",
            env.origin_ca.client_config(),
            get("sni.test", "/passthrough"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/passthrough");
        assert_eq!(env.on_443.hits(), 1);
        let rec = env.agent.audit_where(|a| a["host"] == "sni.test");
        assert_eq!(rec["action"], "allow");
        assert_eq!(rec["status_code"], 200);
        assert_eq!(rec["method"], "");
        assert_eq!(rec["path"], "");
        assert_eq!(rec["sni"], "sni.test");
        assert_eq!(rec["mode"], "sni-only");
        assert_eq!(rec["request_transforms"][0]["name"], "allowlist");

        // Denied server name: the connection is closed, nothing dialled, one reject record.
        let err = https_request(
            https,
            "denied.test",
            env.origin_ca.client_config(),
            get("denied.test", "/"),
        )
        .await;
        assert!(err.is_err(), "{err:?}");
        let rec = env.agent.audit_where(|a| a["host"] == "denied.test");
        assert_eq!(rec["action"], "reject");
        assert_eq!(rec["status_code"], 403);
        assert_eq!(rec["rejected_by"], "allowlist");

        // A rule limited to a method cannot match: no request is ever visible in this mode.
        let err = https_request(
            https,
            "restricted.test",
            env.origin_ca.client_config(),
            get("restricted.test", "/"),
        )
        .await;
        assert!(err.is_err(), "{err:?}");
        let rec = env.agent.audit_where(|a| a["host"] == "restricted.test");
        assert_eq!(rec["action"], "reject");
        assert_eq!(env.on_443.hits(), 1);
    });
}

#[test]
fn client_hello_split_across_segments() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let pieces = Arc::new(AtomicUsize::new(0));
        let relay = chunking_relay(env.agent.addr("https"), 32, pieces.clone()).await;
        let r = https_request(
            relay,
            "sni.test",
            env.origin_ca.client_config(),
            get("sni.test", "/split"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/split");
        assert!(pieces.load(Ordering::SeqCst) > 5, "hello was not split");
        let rec = env.agent.audit_where(|a| a["host"] == "sni.test");
        assert_eq!(rec["action"], "allow");
    });
}

#[test]
fn tunnel_tls_branch_passes_through() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let proxy = format!("http://{}", env.agent.addr("tunnel"));
        let url = format!("https://localhost:{}/via-tunnel", env.local.port());
        // curl trusts only the origin CA; the agent has none to mint with.
        let out = curl(
            &["--cacert", &env.origin_ca_path, &url],
            &[("HTTPS_PROXY", &proxy)],
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.contains("/via-tunnel"), "{out:?}");
        assert_eq!(env.local.hits(), 1);
        let target = format!("localhost:{}", env.local.port());
        let setup = env
            .agent
            .audit_where(|a| a["method"] == "CONNECT" && a["host"] == target);
        assert_eq!(setup["action"], "allow");
        // The passthrough record carries the tunnel and went to the tunnel's port.
        let rec = env
            .agent
            .audit_where(|a| a["method"] == "" && a["host"] == "localhost");
        assert_eq!(rec["action"], "allow");
        assert_eq!(rec["tunnel"]["target"], target);
        assert_eq!(rec["tunnel"]["protocol"], "connect");
    });
}

/// Plain HTTP inside a tunnel is parsed whole even in sni-only mode: iron-proxy audits it as
/// `mode: mitm`; the setup record names the target host as `sni`.
#[test]
fn tunnel_plain_http_is_audited_as_mitm() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let plain = Origin::start(OriginKind::Http, None).await;
        let proxy = format!("http://{}", env.agent.addr("tunnel"));
        let url = format!("http://localhost:{}/plain-in-tunnel", plain.port());
        let out = curl(&["-p", "-x", &proxy, &url], &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        let target = format!("localhost:{}", plain.port());
        let setup = env
            .agent
            .audit_where(|a| a["method"] == "CONNECT" && a["host"] == target);
        assert_eq!(setup["sni"], "localhost");
        assert_eq!(setup["mode"], "sni-only");
        let inner = env.agent.audit_where(|a| a["path"] == "/plain-in-tunnel");
        assert_eq!(inner["action"], "allow");
        assert_eq!(inner["mode"], "mitm");
        assert_eq!(inner["tunnel"]["target"], target);
    });
}

#[test]
fn deny_cidrs_apply_to_the_dialled_address() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        // Default deny list: loopback. sni.test is allowed by policy but resolves to 127.0.0.x.
        let env = start_with(None).await;
        let err = https_request(
            env.agent.addr("https"),
            "sni.test",
            env.origin_ca.client_config(),
            get("sni.test", "/"),
        )
        .await;
        assert!(err.is_err(), "{err:?}");
        let rec = env.agent.audit_where(|a| a["host"] == "sni.test");
        assert_eq!(rec["action"], "error");
        assert_eq!(rec["status_code"], 502);
        assert!(
            rec["error"]
                .as_str()
                .unwrap()
                .contains("denied by upstream_deny_cidrs"),
            "{rec}"
        );
        assert_eq!(env.on_443.hits(), 0);
    });
}
