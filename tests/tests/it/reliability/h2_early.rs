//! Early answers over HTTP/2: a request the agent refuses before reading its body (a POST the
//! allowlist denies, inside a CONNECT tunnel negotiated as h2) reaches the client as that 403
//! (the stream is then ended or reset with NO_ERROR, RFC 9113 §8.1), under concurrent load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use iron_agent_tests::mitm::{MitmAgent, localhost_origin};
use iron_agent_tests::{AgentConfig, Transform, connect_tunnel, h2_handshake, tls_connect};
use serde_json::json;

type Body = BoxBody<Bytes, Infallible>;

/// `localhost` may be reached (so CONNECT is allowed) but only with GET.
fn get_only() -> Vec<Transform> {
    vec![Transform::new(
        "allowlist",
        json!({"rules": [{"host": "localhost", "methods": ["GET"]}]}),
    )]
}

/// The three shapes of upload an early answer meets: done at once, bigger than the agent
/// drains (2 MiB), and one the client never finishes.
fn body(kind: usize) -> Body {
    match kind % 3 {
        0 => Full::new(Bytes::from_static(b"x")).boxed(),
        1 => Full::new(Bytes::from(vec![b'y'; 2 << 20])).boxed(),
        _ => {
            let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"z")))]);
            BodyExt::boxed(StreamBody::new(
                first.chain(futures_util::stream::pending()),
            ))
        }
    }
}

async fn h2_through_tunnel(m: &MitmAgent, port: u16) -> SendRequest<Body> {
    let tcp = connect_tunnel(m.agent.addr("tunnel"), &format!("localhost:{port}")).await;
    let tls = tls_connect(tcp, &m.mitm.client_config(), "localhost", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_handshake(tls).await
}

/// Concurrent denied POSTs multiplexed on h2 connections inside CONNECT tunnels, in rounds:
/// every one gets its 403 with the refusal body (never a stream error), each is audited once,
/// the connection stays usable, and the origin is never dialled.
#[test]
fn denied_posts_over_h2_in_a_tunnel_get_their_403() {
    const CONNS: usize = 3;
    const STREAMS: usize = 30;
    const ROUNDS: usize = 2;
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let (origin, origin_ca) = localhost_origin().await;
        let m = MitmAgent::prepare(&[]).trust(&origin_ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .tunnel_listener()
                .transforms(get_only())
        });
        let port = origin.port();
        let url = format!("https://localhost:{port}/upload");
        let mut conns = Vec::new();
        for _ in 0..CONNS {
            conns.push(h2_through_tunnel(&m, port).await);
        }
        for round in 0..ROUNDS {
            let mut tasks = Vec::new();
            for (c, sender) in conns.iter().enumerate() {
                for s in 0..STREAMS {
                    let mut sender = sender.clone();
                    let req = http::Request::post(&url).body(body(s + c)).unwrap();
                    tasks.push(tokio::spawn(async move {
                        sender.ready().await.unwrap();
                        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                        let status = resp.status().as_u16();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>((status, body.to_bytes()))
                    }));
                }
            }
            for t in tasks {
                let got = tokio::time::timeout(Duration::from_secs(20), t)
                    .await
                    .expect("answered in time")
                    .unwrap();
                let (status, _) = got.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(status, 403, "round {round}");
            }
        }
        let total = CONNS * STREAMS * ROUNDS;
        let denied = m.agent.audits_where(total, |a| {
            a["method"] == "POST" && a["protocol"] == "h2" && a["status_code"] == 403
        });
        assert!(denied.iter().all(|a| a["action"] == "reject"), "{denied:?}");
        std::thread::sleep(Duration::from_millis(300));
        // One record per request plus one per tunnel setup, nothing else.
        assert_eq!(m.agent.audits().len(), total + CONNS);
        assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    });
}

/// The reported symptom: `curl --http2 -X POST` through the tunnel exiting 92 ("Stream error
/// in the HTTP/2 framing layer") when the 403 arrives while it is still uploading. curl keeps
/// uploading after the answer, so the agent drains the unread body (bounded) before the
/// stream ends. Many transfers multiplexed on one connection, in rounds.
// Known broken: passes alone (and fails 92 without the drain), but curl 7.88 intermittently
// stalls some uploads for its 15 s limit when the machine is busy (docs/reliability.md).
#[test]
#[ignore = "intermittent curl 7.88 upload stall under CPU contention; see docs/reliability.md"]
fn curl_h2_posts_in_a_tunnel_see_their_403() {
    const ROUNDS: usize = 3;
    const STREAMS: usize = 30;
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let (origin, origin_ca) = localhost_origin().await;
        let m = MitmAgent::prepare(&[]).trust(&origin_ca).start(|c, k| {
            AgentConfig::loopback(c, k)
                .tunnel_listener()
                .transforms(get_only())
        });
        let mitm_pem = m.dir.path().join("mitm.pem");
        std::fs::write(&mitm_pem, &m.mitm.cert_pem).unwrap();
        let mitm_pem = mitm_pem.to_string_lossy().into_owned();
        let proxy = format!("http://{}", m.agent.addr("tunnel"));
        let url = format!("https://localhost:{}/upload", origin.port());
        // 64 KiB: still uploading when the answer comes.
        let big = m.dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 64 * 1024]).unwrap();
        let big = format!("@{}", big.display());
        for round in 0..ROUNDS {
            let mut args = vec![
                "--http2",
                "--cacert",
                &mitm_pem,
                "--parallel",
                "--parallel-max",
                "15",
                "-X",
                "POST",
                "--data-binary",
                &big,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}\n",
            ];
            args.extend(std::iter::repeat_n(url.as_str(), STREAMS));
            let out = iron_agent_tests::curl::curl(&args, &[("HTTPS_PROXY", &proxy)]).await;
            assert_eq!(out.code, Some(0), "round {round}: {out:?}");
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(lines.len(), STREAMS, "{out:?}");
            assert!(
                lines.iter().all(|l| *l == "403 2"),
                "round {round}: {out:?}"
            );
        }
        let total = ROUNDS * STREAMS;
        m.agent
            .audits_where(total, |a| a["method"] == "POST" && a["status_code"] == 403);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(m.agent.audits().len(), total + ROUNDS);
    });
}
