//! HTTP/2 through the MITM listener: an h2 client (hyper and curl) with a secret injected by
//! the `secrets` transform, to an upstream that negotiates h2 and to an HTTP/1.1-only one.
//! The audit record says which protocol the client spoke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use iron_agent_tests::mitm::{MitmAgent, Setup};
use iron_agent_tests::{
    Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, allow_localhost_with_secret,
    echo_header, h2_handshake, https_request, tls_connect,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;

const TOKEN: &str = "real-h2-token-5551234";
const PLACEHOLDER: &str = "proxy-token-abc";

/// An upstream that negotiates h2 and an HTTP/1.1-only one, both for `localhost`.
struct Origins {
    h2: Origin,
    h1: Origin,
}

async fn setup() -> Setup<Origins> {
    let origin_ca = TestCa::new("origin");
    let names = vec!["localhost".to_string()];
    let h2 = Origin::start(
        OriginKind::HttpsH2 {
            names: names.clone(),
        },
        Some(&origin_ca),
    )
    .await;
    let h1 = Origin::start(OriginKind::Https { names }, Some(&origin_ca)).await;
    let transforms = allow_localhost_with_secret("API_TOKEN", PLACEHOLDER, "Authorization");
    let m = MitmAgent::prepare(&[])
        .trust(&origin_ca)
        .env("API_TOKEN", TOKEN)
        .start(|c, k| {
            AgentConfig::loopback(c, k)
                .tunnel_listener()
                .transforms(transforms)
        });
    Setup {
        m,
        origin: Origins { h2, h1 },
    }
}

/// An HTTP/2 connection to the agent's MITM listener, ALPN `h2` only.
async fn h2_connect(s: &MitmAgent) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(s.agent.addr("https")).await.unwrap();
    let tls = tls_connect(tcp, &s.mitm.client_config(), "localhost", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_handshake(tls).await
}

async fn h2_get(sender: &mut SendRequest<Full<Bytes>>, port: u16, path: &str) -> (u16, Value) {
    let req = http::Request::builder()
        .uri(format!("https://localhost:{port}{path}"))
        .header("authorization", format!("Bearer {PLACEHOLDER}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not an echo: {}", String::from_utf8_lossy(&body)));
    (status, echo)
}

#[test]
fn h2_client_to_h2_and_http1_upstreams_with_secret_injected() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let mut sender = h2_connect(&s).await;

        // h2 end to end: the upstream negotiated h2 and got the real credential.
        let (status, echo) = h2_get(&mut sender, s.origin.h2.port(), "/h2?q=1").await;
        assert_eq!(status, 200);
        assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
        assert_eq!(
            echo["uri"],
            format!("https://localhost:{}/h2?q=1", s.origin.h2.port())
        );
        assert_eq!(
            echo_header(&echo, "authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        for hop in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
            assert!(
                echo_header(&echo, hop).is_none(),
                "{hop} sent upstream: {echo}"
            );
        }

        // Same client connection, an HTTP/1.1-only upstream: translated, Host set from :authority.
        let (status, echo) = h2_get(&mut sender, s.origin.h1.port(), "/h1").await;
        assert_eq!(status, 200);
        assert_eq!(echo["version"], "HTTP/1.1", "{echo}");
        assert_eq!(echo["uri"], "/h1");
        assert_eq!(
            echo_header(&echo, "host"),
            Some(format!("localhost:{}", s.origin.h1.port()).as_str())
        );
        assert_eq!(
            echo_header(&echo, "authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );

        // An HTTP/1.1 client (no ALPN) to the h2-capable upstream still works.
        let req = http::Request::builder()
            .uri("/plain")
            .header("host", format!("localhost:{}", s.origin.h2.port()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = https_request(
            s.agent.addr("https"),
            "localhost",
            s.mitm.client_config(),
            req,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);

        let recs = s.agent.wait_audits(3);
        assert_eq!(recs.len(), 3, "{recs:?}");
        let by_path = |p: &str| {
            recs.iter()
                .find(|r| r["path"] == p)
                .unwrap_or_else(|| panic!("no record for {p}: {recs:?}"))
                .clone()
        };
        for (path, proto) in [("/h2", "h2"), ("/h1", "h2"), ("/plain", "http/1.1")] {
            let r = by_path(path);
            assert_eq!(r["protocol"], proto, "{r}");
            assert_eq!(r["action"], "allow", "{r}");
            assert_eq!(r["status_code"], 200, "{r}");
        }
        let h2 = by_path("/h2");
        assert_eq!(h2["request_transforms"][1]["name"], "secrets", "{h2}");
        s.agent.assert_not_logged(TOKEN);
    });
}

#[test]
fn curl_http2_through_the_mitm() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let ca = s.dir.path().join("ca.crt");
        let port = s.origin.h2.port();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("curl")
                .args(["-sS", "--http2", "--cacert"])
                .arg(&ca)
                .arg("--connect-to")
                .arg(format!("localhost:{port}:{}", s.agent.addr("https")))
                .args(["-H", &format!("Authorization: Bearer {PLACEHOLDER}")])
                .args(["-w", "\n%{http_version}"])
                .arg(format!("https://localhost:{port}/curl"))
                .output(),
        )
        .await
        .unwrap()
        .expect("curl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, version) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(version, "2", "curl did not speak HTTP/2");
        let echo: Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(
            echo_header(&echo, "authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        let recs = s.agent.wait_audits(1);
        assert_eq!(recs[0]["protocol"], "h2");
        assert_eq!(recs[0]["path"], "/curl");
        s.agent.assert_not_logged(TOKEN);
    });
}

#[test]
fn h2_stream_cancelled_by_the_client_is_audited_once_as_client_cancel() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let mut sender = h2_connect(&s).await;
        let req = http::Request::builder()
            .uri(format!("https://localhost:{}/slow", s.origin.h2.port()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        // The origin answers /slow after 3 s; the agent's header timeout (2 s) would make it a
        // 502. Giving up after 300 ms resets the stream, which must end the request first.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(300), sender.send_request(req)).await;
        assert!(gave_up.is_err(), "the slow request answered early");
        let recs = s.agent.wait_audits(1);
        assert_eq!(recs[0]["action"], "client_cancel", "{recs:?}");
        assert_eq!(recs[0]["protocol"], "h2");
        // The connection stays usable, and no second record appears for the cancelled stream.
        let (status, _) = h2_get(&mut sender, s.origin.h2.port(), "/after").await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let recs = s.agent.audits();
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(recs.iter().filter(|r| r["path"] == "/slow").count(), 1);
    });
}

#[test]
fn h2c_prior_knowledge_on_the_http_listener() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let origin = Origin::start(OriginKind::Http, None).await;
        let tcp = TcpStream::connect(s.agent.addr("http")).await.unwrap();
        let mut sender = h2_handshake(tcp).await;
        let req = http::Request::builder()
            .uri(format!("http://localhost:{}/h2c", origin.port()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["version"], "HTTP/1.1");
        let recs = s.agent.wait_audits(1);
        assert_eq!(recs[0]["protocol"], "h2");
        assert_eq!(recs[0]["path"], "/h2c");
    });
}

#[test]
fn h2_inside_a_connect_tunnel() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let ca = s.dir.path().join("ca.crt");
        let port = s.origin.h2.port();
        let proxy = format!("http://{}", s.agent.addr("tunnel"));
        let out = iron_agent_tests::curl::curl(
            &[
                "--http2",
                "--cacert",
                &ca.to_string_lossy(),
                "--proxy",
                &proxy,
                "-H",
                &format!("Authorization: Bearer {PLACEHOLDER}"),
                "-w",
                "\n%{http_version}",
                &format!("https://localhost:{port}/tunnelled"),
            ],
            &[],
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}\n{}", s.agent.logs());
        let (body, version) = out.stdout.rsplit_once('\n').unwrap();
        assert_eq!(version, "2", "curl did not speak HTTP/2 inside the tunnel");
        let echo: Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(
            echo_header(&echo, "authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        let recs = s.agent.wait_audits(2);
        let inner = recs
            .iter()
            .find(|r| r["path"] == "/tunnelled")
            .expect("inner record");
        assert_eq!(inner["protocol"], "h2", "{inner}");
        assert!(inner.get("tunnel").is_some(), "{inner}");
        s.agent.assert_not_logged(TOKEN);
    });
}

#[test]
fn h2_client_to_http1_upstream_gets_configured_header_casing() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let o = Origin::start_raw().await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("m").write(dir.path());
        let t = Transform::secrets(json!([
            {"source": {"type": "env", "var": "API_KEY"}, "inject": {"header": "X-API-Key"}},
        ]));
        let agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms([t]))
            .env("API_KEY", "cased-real")
            .start();
        // h2c (prior knowledge): HTTP/2 header names are lower-case on the wire.
        let tcp = TcpStream::connect(agent.addr("http")).await.unwrap();
        let mut sender = h2_handshake(tcp).await;
        let req = http::Request::builder()
            .uri(format!("http://localhost:{}/c", o.port()))
            .header("x-client", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let echo: Value = serde_json::from_slice(&body).unwrap();
        let head = echo["head"].as_str().unwrap();
        // The HTTP/1.1 upstream sees the configured casing; other names as HTTP/2 carried them.
        assert!(head.starts_with("GET /c HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nX-API-Key: cased-real"), "{head}");
        assert!(head.contains("\r\nx-client: 1"), "{head}");
        assert!(
            head.contains(&format!("\r\nhost: localhost:{}", o.port())),
            "{head}"
        );
    });
}
