//! WebSocket through the agent: over HTTP/1.1 (Upgrade) and over HTTP/2 (extended CONNECT,
//! RFC 8441), to a TLS echo server that checks the credential the `secrets` transform
//! injected into the handshake. One audit record per WebSocket, written when it closes, with
//! the upstream's 101; a denied handshake gets 403 and one record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use iron_agent_tests::mitm::{MitmAgent, Setup, Upstream};
use iron_agent_tests::ws::{SeenKeys, serve_echo};
use iron_agent_tests::{
    AgentConfig, TestCa, allow_localhost_with_secret, connect_tunnel, h2_handshake, tls_connect,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const TOKEN: &str = "real-ws-key-31337";
const PLACEHOLDER: &str = "proxy-ws-key";

/// A TLS WebSocket echo server (WebSocket over HTTP/1.1; ALPN offers h2 too); records each handshake's `x-api-key`.
struct WsOrigin {
    addr: SocketAddr,
    seen_keys: SeenKeys,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ws_origin(ca: &TestCa) -> WsOrigin {
    // Like most real servers it would pick h2 if offered; the agent must offer only http/1.1
    // for the WebSocket handshake.
    let acceptor = ca.acceptor(&["localhost"], &[b"h2", b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen_keys = SeenKeys::default();
    let seen = seen_keys.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // A real server would now speak HTTP/2, where an HTTP/1.1 Upgrade is impossible.
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    return;
                }
                serve_echo(tls, seen).await;
            });
        }
    });
    WsOrigin {
        addr,
        seen_keys,
        task,
    }
}

impl Upstream for WsOrigin {
    fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn setup() -> Setup<WsOrigin> {
    let origin_ca = TestCa::new("origin");
    let origin = ws_origin(&origin_ca).await;
    let transforms = allow_localhost_with_secret("WS_KEY", PLACEHOLDER, "X-Api-Key");
    let m = MitmAgent::prepare(&[])
        .trust(&origin_ca)
        .env("WS_KEY", TOKEN)
        .start(|c, k| {
            AgentConfig::loopback(c, k)
                .tunnel_listener()
                .transforms(transforms)
        });
    Setup { m, origin }
}

/// TLS to the agent's MITM listener with `sni`, offering `alpn`.
async fn tls_to_agent(
    s: &MitmAgent,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(s.agent.addr("https")).await.unwrap();
    tls_connect(tcp, &s.mitm.client_config(), sni, alpn).await
}

/// A WebSocket over HTTP/2 (RFC 8441 extended CONNECT) to the origin's `path`, on an h2
/// connection to the agent; the placeholder credential rides in the handshake. The caller
/// keeps `sender` alive as long as the WebSocket: dropping it ends the h2 connection.
async fn extended_connect(
    sender: &mut SendRequest<Empty<Bytes>>,
    port: u16,
    path: &str,
) -> http::Response<Incoming> {
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://localhost:{port}{path}"))
        .header("sec-websocket-version", "13")
        .header("x-api-key", PLACEHOLDER)
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

/// The client side of an accepted extended CONNECT, as a WebSocket.
async fn ws_over_h2(
    resp: http::Response<Incoming>,
) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    assert_eq!(resp.status(), 200, "extended CONNECT refused: {resp:?}");
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

/// A WebSocket over HTTP/1.1 (Upgrade) to `wss://{authority}{path}` through `io`, with the
/// placeholder credential in the handshake.
async fn ws_over_http1<S>(
    io: S,
    authority: &str,
    path: &str,
) -> Result<
    (
        WebSocketStream<S>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!("wss://{authority}{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-api-key", PLACEHOLDER.parse().unwrap());
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, io),
    )
    .await
    .expect("websocket handshake in time")
}

/// Echo round trip (text and binary), then a clean close.
async fn echo_and_close<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for msg in [Message::text("hello"), Message::binary(vec![1u8, 2, 3])] {
        ws.send(msg.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    if let Err(e) = ws.close(None).await {
        // Over HTTP/2 the close frame can reach the origin, whose answering close ends the
        // relay, and the agent's end of the stream (RST_STREAM NO_ERROR, RFC 9113 §8.1) can
        // land before the client's flush returns. Only a failure to write at all is a failure.
        // The reset shows in the error's message or, wrapped by hyper ("error writing a body
        // to connection"), in its source chain: Debug renders both.
        assert!(
            matches!(&e, WsError::Io(io) if format!("{io} {io:?}").contains("NO_ERROR")),
            "close failed: {e} ({e:?})"
        );
    }
    // Drain until the server's close arrives and the stream ends.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(drained.is_ok(), "close handshake did not finish");
}

/// After the WebSocket closed: exactly one record, the WebSocket's; the secret never logged.
fn assert_one_ws_record(s: &Setup<WsOrigin>) {
    let recs = s.agent.wait_audits(1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_ws_record(s, &recs[0]);
    s.agent.assert_not_logged(TOKEN);
}

fn assert_ws_record(s: &Setup<WsOrigin>, rec: &serde_json::Value) {
    assert_eq!(rec["protocol"], "websocket", "{rec}");
    assert_eq!(rec["status_code"], 101, "{rec}");
    assert_eq!(rec["action"], "allow", "{rec}");
    assert_eq!(rec["method"], "GET", "{rec}");
    assert_eq!(rec["path"], "/chat", "{rec}");
    assert_eq!(rec["host"], s.host());
    assert_eq!(rec["request_transforms"][1]["name"], "secrets", "{rec}");
}

#[test]
fn websocket_over_http1_with_injected_header() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let tls = tls_to_agent(&s, "localhost", &[b"http/1.1"]).await;
        let (mut ws, resp) = ws_over_http1(tls, &s.host(), "/chat").await.unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(s.origin.seen_keys.lock().unwrap().as_slice(), [TOKEN]);
        // Nothing is audited while the WebSocket is open.
        assert!(s.agent.audits().is_empty(), "{:?}", s.agent.audits());
        echo_and_close(&mut ws).await;
        drop(ws);
        assert_one_ws_record(&s);
    });
}

#[test]
fn websocket_over_http2_extended_connect() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let tls = tls_to_agent(&s, "localhost", &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut sender = h2_handshake(tls).await;
        let resp = extended_connect(&mut sender, s.origin.addr.port(), "/chat").await;
        let mut ws = ws_over_h2(resp).await;
        assert_eq!(s.origin.seen_keys.lock().unwrap().as_slice(), [TOKEN]);
        echo_and_close(&mut ws).await;
        drop(ws);
        assert_one_ws_record(&s);
    });
}

#[test]
fn websocket_dropped_without_close_is_audited_once() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let tls = tls_to_agent(&s, "localhost", &[b"http/1.1"]).await;
        let (mut ws, _) = ws_over_http1(tls, &s.host(), "/chat").await.unwrap();
        ws.send(Message::text("one")).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text("one"));
        // The client vanishes: no close frame, the TCP connection just goes away.
        drop(ws);
        let recs = s.agent.wait_audits(1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(s.agent.audits().len(), 1, "{:?}", s.agent.audits());
        assert_eq!(recs[0]["status_code"], 101, "{}", recs[0]);
        assert_eq!(recs[0]["protocol"], "websocket");
    });
}

#[test]
fn upstream_refusing_the_handshake_is_relayed_as_a_normal_response() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let tls = tls_to_agent(&s, "localhost", &[b"http/1.1"]).await;
        let err = ws_over_http1(tls, &s.host(), "/unauthorized")
            .await
            .unwrap_err();
        match err {
            WsError::Http(resp) => assert_eq!(resp.status(), 401),
            other => panic!("expected an HTTP 401, got {other:?}"),
        }
        let recs = s.agent.wait_audits(1);
        assert_eq!(recs[0]["status_code"], 401, "{}", recs[0]);
        assert_eq!(recs[0]["action"], "allow");
        assert_eq!(recs[0]["protocol"], "websocket");
        assert_eq!(s.origin.seen_keys.lock().unwrap().len(), 1);
    });
}

#[test]
fn open_websocket_is_closed_and_audited_at_shutdown() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let mut s = setup().await;
        let tls = tls_to_agent(&s, "localhost", &[b"http/1.1"]).await;
        let (mut ws, _) = ws_over_http1(tls, &s.host(), "/chat").await.unwrap();
        ws.send(Message::text("one")).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap();
        assert_eq!(back.unwrap().unwrap(), Message::text("one"));
        let status = tokio::task::block_in_place(|| s.agent.signal(libc::SIGTERM));
        assert!(status.success(), "exit status {status:?}");
        let recs = s.agent.audits();
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0]["protocol"], "websocket");
        assert_eq!(recs[0]["status_code"], 101);
        // The client sees its connection end.
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    });
}

#[test]
fn websocket_inside_a_connect_tunnel() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let target = s.host();
        let tcp = connect_tunnel(s.agent.addr("tunnel"), &target).await;
        let tls = tls_connect(tcp, &s.mitm.client_config(), "localhost", &[b"http/1.1"]).await;
        let (mut ws, _) = ws_over_http1(tls, &target, "/chat").await.unwrap();
        assert_eq!(s.origin.seen_keys.lock().unwrap().as_slice(), [TOKEN]);
        echo_and_close(&mut ws).await;
        drop(ws);
        let recs = s.agent.wait_audits(2);
        let inner = recs
            .iter()
            .find(|r| r["protocol"] == "websocket")
            .unwrap_or_else(|| panic!("{recs:?}"));
        assert_ws_record(&s, inner);
        assert!(inner.get("tunnel").is_some(), "{inner}");
    });
}

#[test]
fn denied_websocket_handshake_gets_403_and_one_record() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let tls = tls_to_agent(&s, "denied.test", &[b"http/1.1"]).await;
        let err = ws_over_http1(tls, "denied.test", "/chat")
            .await
            .unwrap_err();
        match err {
            WsError::Http(resp) => assert_eq!(resp.status(), 403),
            other => panic!("expected an HTTP 403, got {other:?}"),
        }
        let recs = s.agent.wait_audits(1);
        // Give a stray second record a moment to show up before counting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let recs_after = s.agent.audits();
        assert_eq!(recs_after.len(), 1, "{recs_after:?}");
        let rec = &recs[0];
        assert_eq!(rec["protocol"], "websocket", "{rec}");
        assert_eq!(rec["action"], "reject", "{rec}");
        assert_eq!(rec["status_code"], 403, "{rec}");
        assert_eq!(rec["host"], "denied.test");
        assert!(s.origin.seen_keys.lock().unwrap().is_empty());
    });
}

#[test]
fn websocket_over_http2_inside_a_connect_tunnel() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let target = s.host();
        let tcp = connect_tunnel(s.agent.addr("tunnel"), &target).await;
        let tls = tls_connect(tcp, &s.mitm.client_config(), "localhost", &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut sender = h2_handshake(tls).await;
        let resp = extended_connect(&mut sender, s.origin.addr.port(), "/chat").await;
        let mut ws = ws_over_h2(resp).await;
        assert_eq!(s.origin.seen_keys.lock().unwrap().as_slice(), [TOKEN]);
        echo_and_close(&mut ws).await;
        drop(ws);
        let recs = s.agent.wait_audits(2);
        assert_eq!(recs.len(), 2, "{recs:?}");
        let setup_rec = recs
            .iter()
            .find(|r| r["method"] == "CONNECT")
            .unwrap_or_else(|| panic!("{recs:?}"));
        assert_eq!(setup_rec["action"], "allow", "{setup_rec}");
        let inner = recs
            .iter()
            .find(|r| r["protocol"] == "websocket")
            .unwrap_or_else(|| panic!("{recs:?}"));
        assert_ws_record(&s, inner);
        assert_eq!(inner["tunnel"]["target"], target, "{inner}");
        s.agent.assert_not_logged(TOKEN);
    });
}

/// For an extended CONNECT the agent made up the `Sec-WebSocket-Key`, so it must check the
/// upstream's `Sec-WebSocket-Accept`: a 101 with the wrong one is a 502, audited once.
#[test]
fn extended_connect_upstream_with_wrong_accept_is_a_502() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup().await;
        let tls = tls_to_agent(&s, "localhost", &[b"h2"]).await;
        let mut sender = h2_handshake(tls).await;
        let resp = extended_connect(&mut sender, s.origin.addr.port(), "/bad-accept").await;
        assert_eq!(resp.status(), 502, "{resp:?}");
        // The upstream did see the handshake: the refusal is the agent's.
        assert_eq!(s.origin.seen_keys.lock().unwrap().as_slice(), [TOKEN]);
        let recs = s.agent.wait_audits(1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(s.agent.audits().len(), 1, "{:?}", s.agent.audits());
        let rec = &recs[0];
        assert_eq!(rec["protocol"], "websocket", "{rec}");
        assert_eq!(rec["action"], "error", "{rec}");
        assert_eq!(rec["status_code"], 502, "{rec}");
        assert!(
            rec["error"]
                .as_str()
                .is_some_and(|e| e.contains("Sec-WebSocket-Accept")),
            "{rec}"
        );
        s.agent.assert_not_logged(TOKEN);
    });
}
