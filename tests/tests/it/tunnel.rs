//! The tunnel listener end to end: curl through HTTP CONNECT and SOCKS5, raw SOCKS5 clients,
//! plain HTTP and junk inside tunnels, and the audit records of setup and inner requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use iron_agent_tests::curl::curl;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, connect_tunnel};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_KEY: &str = "tunnel-secret-4242";

struct Env {
    agent: Agent,
    /// HTTPS origin for `localhost`, signed by the origin CA the agent trusts.
    https: Origin,
    /// Plain HTTP origin on 127.0.0.1.
    http: Origin,
    /// Plain HTTP origin on [::1].
    http6: Origin,
    mitm_pem: String,
    _dir: tempfile::TempDir,
}

impl Env {
    fn tunnel(&self) -> SocketAddr {
        self.agent.addr("tunnel")
    }

    fn proxy_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.tunnel())
    }
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("tunnel origin CA");
    let origin_ca_path = dir.path().join("origin-ca.pem");
    std::fs::write(&origin_ca_path, &origin_ca.cert_pem).unwrap();
    let https = Origin::start(
        OriginKind::Https {
            names: vec!["localhost".into()],
        },
        Some(&origin_ca),
    )
    .await;
    let http = Origin::start(OriginKind::Http, None).await;
    let http6 = Origin::start_on("[::1]:0".parse().unwrap(), OriginKind::Http, None).await;
    let zone = iron_agent_tests::dns::fake_zone(&[("restricted.test", "127.0.0.1")]).await;
    let mitm = TestCa::new("tunnel MITM CA");
    let (c, k) = mitm.write(dir.path());
    let mitm_pem = dir.path().join("mitm.pem");
    std::fs::write(&mitm_pem, &mitm.cert_pem).unwrap();
    let transforms = vec![
        Transform::new(
            "allowlist",
            json!({
                "domains": ["localhost"],
                "cidrs": ["127.0.0.1/32", "::1/128"],
                "rules": [{"host": "restricted.test", "methods": ["GET"], "paths": ["/ok"]}],
            }),
        ),
        Transform::secrets(json!([
            {
                "source": {"type": "env", "var": "TUNNEL_API_KEY"},
                "inject": {"header": "X-Api-Key"},
                "rules": [{"host": "localhost"}],
            },
        ])),
    ];
    let config = AgentConfig::loopback(&c, &k)
        .tunnel_listener()
        .resolver(zone)
        .transforms(transforms);
    let agent = Agent::with(&config)
        .env("SSL_CERT_FILE", origin_ca_path.to_string_lossy())
        .env("TUNNEL_API_KEY", API_KEY)
        .start();
    Env {
        agent,
        https,
        http,
        http6,
        mitm_pem: mitm_pem.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

fn echo_header(body: &str, name: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not an echo: {body}"));
    iron_agent_tests::echo_header(&v, name).map(str::to_string)
}

#[test]
fn curl_https_proxy_connect() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let proxy = env.proxy_url("http");
        let url = format!("https://localhost:{}/through?x=1", env.https.port());
        let out = curl(
            &["--cacert", &env.mitm_pem, &url],
            &[("HTTPS_PROXY", &proxy)],
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}");
        // The secret was injected inside the tunnel, and the origin saw the tunnel's port.
        assert_eq!(
            echo_header(&out.stdout, "x-api-key").as_deref(),
            Some(API_KEY)
        );
        let target = format!("localhost:{}", env.https.port());
        assert_eq!(
            echo_header(&out.stdout, "host").as_deref(),
            Some(target.as_str())
        );

        let setup = env
            .agent
            .audit_where(|a| a["method"] == "CONNECT" && a["host"] == target);
        assert_eq!(setup["action"], "allow");
        assert_eq!(setup["status_code"], 200);
        assert_eq!(setup["path"], "");
        assert_eq!(setup["protocol"], "connect");
        // iron-proxy names the target host as the setup record's `sni`.
        assert_eq!(setup["sni"], "localhost");
        // Decision 9: only the allowlist judges the setup.
        let traces = setup["request_transforms"].as_array().unwrap();
        assert_eq!(traces.len(), 1, "{setup}");
        assert_eq!(traces[0]["name"], "allowlist");
        assert!(setup.get("tunnel").is_none());

        let inner = env.agent.audit_where(|a| a["path"] == "/through");
        assert_eq!(inner["action"], "allow");
        assert_eq!(inner["method"], "GET");
        assert_eq!(inner["sni"], "localhost");
        assert_eq!(inner["tunnel"]["target"], target);
        assert_eq!(inner["tunnel"]["protocol"], "connect");
        assert_eq!(
            inner["tunnel"]["request_transforms"][0]["name"],
            "allowlist"
        );
        assert_eq!(inner["request_transforms"][1]["name"], "secrets");

        // Denied host: 403 at setup, one record, nothing dialled.
        let out = curl(
            &["--cacert", &env.mitm_pem, "https://denied.test/x"],
            &[("HTTPS_PROXY", &proxy)],
        )
        .await;
        assert_ne!(out.code, Some(0));
        assert!(out.stderr.contains("403"), "{out:?}");
        let denied = env.agent.audit_where(|a| a["host"] == "denied.test:443");
        assert_eq!(denied["method"], "CONNECT");
        assert_eq!(denied["action"], "reject");
        assert_eq!(denied["status_code"], 403);
        assert_eq!(denied["rejected_by"], "allowlist");
        env.agent.assert_not_logged(API_KEY);
    });
}

#[test]
fn curl_socks5h() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let proxy = env.proxy_url("socks5h");
        let url = format!("https://localhost:{}/socks", env.https.port());
        let out = curl(&["--cacert", &env.mitm_pem, &url], &[("ALL_PROXY", &proxy)]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(
            echo_header(&out.stdout, "x-api-key").as_deref(),
            Some(API_KEY)
        );
        let inner = env.agent.audit_where(|a| a["path"] == "/socks");
        assert_eq!(inner["tunnel"]["protocol"], "socks5");
        let setup = env.agent.audit_where(|a| {
            a["method"] == "CONNECT" && a["host"] == format!("localhost:{}", env.https.port())
        });
        assert_eq!(setup["protocol"], "socks5");

        let out = curl(
            &["--cacert", &env.mitm_pem, "https://denied.test/"],
            &[("ALL_PROXY", &proxy)],
        )
        .await;
        assert_ne!(out.code, Some(0), "{out:?}");
        let denied = env.agent.audit_where(|a| a["host"] == "denied.test:443");
        assert_eq!(denied["action"], "reject");
        assert_eq!(denied["protocol"], "socks5");
    });
}

#[test]
fn plain_http_through_connect_and_http_proxy() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let proxy = env.proxy_url("http");
        // --proxytunnel: plain HTTP inside a CONNECT tunnel.
        let url = format!("http://localhost:{}/plain-tunnel", env.http.port());
        let out = curl(&["-p", "-x", &proxy, &url], &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(
            echo_header(&out.stdout, "x-api-key").as_deref(),
            Some(API_KEY)
        );
        let inner = env.agent.audit_where(|a| a["path"] == "/plain-tunnel");
        assert_eq!(inner["sni"], "");
        assert_eq!(inner["tunnel"]["protocol"], "connect");

        // HTTP_PROXY pointing at the tunnel port: absolute-form, served like the HTTP listener.
        let url = format!("http://localhost:{}/absolute", env.http.port());
        let out = curl(&[&url], &[("http_proxy", &proxy)]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        let rec = env.agent.audit_where(|a| a["path"] == "/absolute");
        assert_eq!(rec["action"], "allow");
        assert!(rec.get("tunnel").is_none());
    });
}

async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("agent did not close")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn junk_inside_tunnel_is_closed_and_audited() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let target = format!("localhost:{}", env.http.port());
        let mut s = connect_tunnel(env.tunnel(), &target).await;
        s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        assert_eq!(read_all(&mut s).await, "");
        let rec = env
            .agent
            .audit_where(|a| a["reason"] == "tunnel_protocol_unsupported");
        assert_eq!(rec["action"], "reject");
        assert_eq!(rec["host"], target);
        assert_eq!(rec["tunnel"]["target"], target);
        assert_eq!(rec["rejected_by"], "proxy");
        assert_eq!(env.http.hits(), 0);
    });
}

#[test]
fn inner_requests_use_the_tunnel_port_and_their_own_rules() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        // Inner Host without a port: the request still goes to the port of the tunnel.
        let mut s = connect_tunnel(env.tunnel(), &format!("localhost:{}", env.http.port())).await;
        s.write_all(b"GET /portless HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let resp = read_all(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(env.http.hits(), 1);

        // Decision 9: a rule limited to GET /ok admits the tunnel; each request is then judged.
        let target = format!("restricted.test:{}", env.http.port());
        let mut s = connect_tunnel(env.tunnel(), &target).await;
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: restricted.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s.write_all(b"GET /no HTTP/1.1\r\nHost: restricted.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let resp = read_all(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        let rejected = env.agent.audit_where(|a| a["path"] == "/no");
        assert_eq!(rejected["rejected_by"], "allowlist");
        assert_eq!(rejected["tunnel"]["target"], target);
    });
}

/// SOCKS5 greeting (no-auth) and CONNECT request; returns the stream and the reply code.
pub(crate) async fn socks_connect(
    tunnel: SocketAddr,
    atyp: u8,
    addr: &[u8],
    port: u16,
) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(tunnel).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, 1, 0, atyp];
    req.extend_from_slice(addr);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[0], 5);
    (s, reply[1])
}

async fn get_over(s: &mut TcpStream, host: &str, path: &str) -> String {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    read_all(s).await
}

#[test]
fn raw_socks5_address_types_and_refusals() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let t = env.tunnel();
        let port = env.http.port();

        let (mut s, code) = socks_connect(t, 1, &[127, 0, 0, 1], port).await;
        assert_eq!(code, 0);
        let r = get_over(&mut s, &format!("127.0.0.1:{port}"), "/v4").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");

        let p6 = env.http6.port();
        let (mut s, code) = socks_connect(t, 4, &std::net::Ipv6Addr::LOCALHOST.octets(), p6).await;
        assert_eq!(code, 0);
        let r = get_over(&mut s, &format!("[::1]:{p6}"), "/v6").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(env.http6.hits(), 1);
        env.agent
            .audit_where(|a| a["method"] == "CONNECT" && a["host"] == format!("[::1]:{p6}"));

        let mut dom = vec![9u8];
        dom.extend_from_slice(b"localhost");
        let (mut s, code) = socks_connect(t, 3, &dom, port).await;
        assert_eq!(code, 0);
        let r = get_over(&mut s, "localhost", "/domain").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let rec = env.agent.audit_where(|a| a["path"] == "/domain");
        assert_eq!(rec["tunnel"]["protocol"], "socks5");
        assert_eq!(rec["tunnel"]["target"], format!("localhost:{port}"));

        // Denied destination: 0x02, and the setup is audited.
        let mut dom = vec![11u8];
        dom.extend_from_slice(b"denied.test");
        let (_s, code) = socks_connect(t, 3, &dom, 443).await;
        assert_eq!(code, 2);
        env.agent.audit_where(|a| a["host"] == "denied.test:443");

        // BIND: command not supported (0x07); the address was sent, so the record names it.
        let mut s = TcpStream::connect(t).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
            .await
            .unwrap();
        let mut r = [0u8; 12];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(&r[..4], &[5, 0, 5, 7]);
        let bind = refusal_of(&env, &s, "socks5_command_not_supported");
        assert_eq!(bind["host"], "127.0.0.1:80");
        let mut refused = vec![s.local_addr().unwrap()];

        // Unknown address type: 0x08.
        let mut s = TcpStream::connect(t).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 1, 0, 9]).await.unwrap();
        let mut r = [0u8; 12];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(&r[..4], &[5, 0, 5, 8]);
        let atyp = refusal_of(&env, &s, "socks5_address_type_not_supported");
        assert_eq!(atyp["host"], "");
        refused.push(s.local_addr().unwrap());

        // Only username/password offered: no acceptable method.
        let mut s = TcpStream::connect(t).await.unwrap();
        s.write_all(&[5, 1, 2]).await.unwrap();
        let mut r = [0u8; 2];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(r, [5, 0xff]);
        assert_eq!(read_all(&mut s).await, "");
        let method = refusal_of(&env, &s, "socks5_no_acceptable_method");
        assert_eq!(method["host"], "");
        refused.push(s.local_addr().unwrap());

        for rec in [&bind, &atyp, &method] {
            assert_eq!(rec["protocol"], "socks5");
            // As for a denied SOCKS5 setup: SOCKS has no HTTP status.
            assert_eq!(rec["status_code"], 403);
        }
        assert_one_record_each(&env, &refused);
    });
}

/// The audit record of the connection `s` (matched by its client address), which must be an
/// agent refusal of the handshake with `reason`.
fn refusal_of(env: &Env, s: &TcpStream, reason: &str) -> Value {
    let client = s.local_addr().unwrap().to_string();
    let rec = env.agent.audit_where(|a| a["remote_addr"] == client);
    assert_eq!(rec["reason"], reason, "{rec}");
    assert_eq!(rec["action"], "reject");
    assert_eq!(rec["level"], "WARN");
    assert_eq!(rec["rejected_by"], "proxy");
    assert_eq!(rec["method"], "CONNECT");
    assert_eq!(rec["path"], "");
    assert_eq!(rec["request_transforms"], serde_json::json!([]));
    rec
}

/// After a pause for stragglers, each client address has exactly one audit record.
fn assert_one_record_each(env: &Env, clients: &[SocketAddr]) {
    std::thread::sleep(Duration::from_millis(300));
    let audits = env.agent.audits();
    for c in clients {
        let n = audits
            .iter()
            .filter(|a| a["remote_addr"] == c.to_string())
            .count();
        assert_eq!(n, 1, "records for {c}; logs:\n{}", env.agent.logs());
    }
}

#[test]
fn connect_refusals_are_audited_once() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let t = env.tunnel();
        let mut refused = Vec::new();

        // A CONNECT target that is not host:port.
        let mut s = TcpStream::connect(t).await.unwrap();
        s.write_all(b"CONNECT /not-an-authority HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_all(&mut s).await.starts_with("HTTP/1.1 400 "));
        let rec = refusal_of(&env, &s, "malformed_connect");
        assert_eq!(
            (&rec["host"], &rec["status_code"]),
            (&"".into(), &400.into())
        );
        assert_eq!(rec["protocol"], "connect");
        refused.push(s.local_addr().unwrap());

        // A head that reaches the 16 KiB cap unfinished (one endless header line). Exactly the
        // cap, so the agent has read every byte when it closes (unread bytes would mean a RST
        // racing the answer).
        let mut s = TcpStream::connect(t).await.unwrap();
        let mut head = b"CONNECT localhost:443 HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(16 * 1024, b'a');
        s.write_all(&head).await.unwrap();
        assert!(read_all(&mut s).await.starts_with("HTTP/1.1 400 "));
        let rec = refusal_of(&env, &s, "connect_head_too_large");
        assert_eq!(
            (&rec["host"], &rec["status_code"]),
            (&"".into(), &400.into())
        );
        assert_eq!(rec["protocol"], "connect");
        refused.push(s.local_addr().unwrap());

        assert_one_record_each(&env, &refused);
    });
}

/// Connections that never complete a handshake get no answer, so no record: silent ones and
/// ones that stall mid-head are closed at the 10 s handshake timeout.
#[test]
fn unanswered_handshakes_leave_no_record() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let env = start().await;
        let t = env.tunnel();
        let silent = TcpStream::connect(t).await.unwrap();
        let mut partial = TcpStream::connect(t).await.unwrap();
        partial
            .write_all(b"CONNECT localhost:443 HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        let mut socks = TcpStream::connect(t).await.unwrap();
        socks.write_all(&[5, 1, 0, 5, 1]).await.unwrap();
        let clients = [&silent, &partial, &socks].map(|s| s.local_addr().unwrap().to_string());
        for mut s in [silent, partial, socks] {
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out));
            read.await
                .expect("agent did not time the handshake out")
                .ok();
            // The SOCKS client got the method choice, nothing else.
            assert!(out.is_empty() || out == [5, 0], "{out:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
        let audits = env.agent.audits();
        for c in clients {
            assert!(
                !audits.iter().any(|a| a["remote_addr"] == c),
                "record for unanswered {c}; logs:\n{}",
                env.agent.logs()
            );
        }
    });
}

#[test]
fn shutdown_closes_open_tunnels_promptly() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let mut env = start().await;
        // One tunnel open and silent, one keep-alive HTTP connection idle inside a tunnel, one
        // SOCKS5 handshake half done.
        let silent = connect_tunnel(env.tunnel(), &format!("localhost:{}", env.http.port())).await;
        let mut idle =
            connect_tunnel(env.tunnel(), &format!("localhost:{}", env.http.port())).await;
        idle.write_all(b"GET /idle HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let mut half = TcpStream::connect(env.tunnel()).await.unwrap();
        half.write_all(&[5, 1, 0]).await.unwrap();

        let started = std::time::Instant::now();
        let st = tokio::task::block_in_place(|| env.agent.signal(libc::SIGTERM));
        assert_eq!(st.code(), Some(0), "{}", env.agent.logs());
        // Well inside the 10 s drain: nothing waited for the drain timeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!env.agent.logs().contains("drain timeout"));
        drop((silent, idle, half));
    });
}
