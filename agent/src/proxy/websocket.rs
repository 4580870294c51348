//! WebSocket through the agent: an HTTP/1.1 `Upgrade: websocket` handshake, or HTTP/2
//! extended CONNECT (RFC 8441, `:protocol websocket`).
//!
//! Both arrive at the pipeline as the same HTTP/1.1-style handshake (`GET` with
//! `Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-*`), so rules and credential
//! injection work the same either way. The handshake goes upstream over HTTP/1.1 on a
//! dedicated connection from the same connector (deny list, TLS verification). When the
//! upstream answers 101, both sides are upgraded and bytes are relayed until either side
//! closes; the audit record is written then, with the upstream's status. Any other answer goes
//! back to the client as an ordinary response.

use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Runtime;
use super::audited_body::AuditedBody;
use crate::audit::PendingAudit;
use crate::message::hop_by_hop;
use crate::message::{ProxyRequest, body};
use crate::outcome::{self, Failure, Outcome};
use crate::upstream::UpstreamError;

/// The open WebSockets. Their relays outlive the HTTP connection that carried the handshake,
/// so shutdown closes them here (each still writes its audit record) before the audit log is
/// flushed.
#[derive(Default)]
pub struct Relays {
    tasks: TaskTracker,
    closing: CancellationToken,
}

impl Relays {
    /// Closes every open WebSocket and waits (at most `limit`) for their audit records.
    pub async fn close(&self, limit: Duration) {
        self.closing.cancel();
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("websocket relays did not finish in time");
        }
    }
}

/// How the client asked for the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 `Upgrade: websocket`; the client gets the upstream's 101.
    Upgrade,
    /// HTTP/2 extended CONNECT; the client gets 200 on its stream.
    ExtendedConnect,
}

/// The client half of a WebSocket request: how it asked, and its side of the upgrade.
pub struct ClientSide {
    kind: Kind,
    upgrade: OnUpgrade,
}

/// Recognises a WebSocket handshake, takes the client's upgrade handle, and rewrites an
/// extended CONNECT into the HTTP/1.1 handshake model the pipeline and upstream see.
pub fn detect<B>(req: &mut Request<B>) -> Option<ClientSide> {
    let kind = if req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
    {
        Kind::ExtendedConnect
    } else if req.method() == Method::GET
        && req.version() <= http::Version::HTTP_11
        && has_token(req.headers(), header::UPGRADE, "websocket")
        && has_token(req.headers(), header::CONNECTION, "upgrade")
    {
        Kind::Upgrade
    } else {
        return None;
    };
    let upgrade = hyper::upgrade::on(&mut *req);
    if kind == Kind::ExtendedConnect {
        req.extensions_mut().remove::<Protocol>();
        *req.method_mut() = Method::GET;
        let h = req.headers_mut();
        // RFC 8441 drops the key/accept exchange; HTTP/1.1 upstreams require it.
        h.insert(header::SEC_WEBSOCKET_KEY, new_key());
        h.entry(header::SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
        set_upgrade_headers(h);
    }
    Some(ClientSide { kind, upgrade })
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn set_upgrade_headers(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn new_key() -> HeaderValue {
    let mut raw = [0u8; 16];
    // A failing system RNG leaves zeros: the key is a nonce against caching proxies, not a secret.
    let _ = crate::tls::provider().secure_random.fill(&mut raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    HeaderValue::from_str(&b64).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// RFC 6455 §4.2.2: the `Sec-WebSocket-Accept` value proving a server read `key`.
fn accept_for(key: &[u8]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    base64::engine::general_purpose::STANDARD
        .encode(digest)
        .into_bytes()
}

/// The upstream's answer to the handshake.
pub enum Handshake {
    /// 101: the upstream's side of the upgrade is pending in the response.
    Switched(Response<Incoming>),
    /// Anything else, relayed as a normal response.
    Answered(Response<Incoming>),
}

/// Sends the (transformed, hop-by-hop-stripped, absolute-URI) handshake upstream over a
/// dedicated HTTP/1.1 connection. For an extended CONNECT the agent made up the key, so it is
/// the agent that checks the upstream's `Sec-WebSocket-Accept` (an HTTP/1.1 client checks its
/// own); a 101 that does not prove the upstream read this handshake is an error.
pub async fn handshake(
    rt: &Runtime,
    client: &ClientSide,
    mut req: ProxyRequest,
) -> Result<Handshake, UpstreamError> {
    // What the upstream must answer to the key that is actually sent (after transforms).
    let expected_accept = (client.kind == Kind::ExtendedConnect).then(|| {
        req.headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| accept_for(k.as_bytes()))
    });
    let uri = req.uri().clone();
    let mut connector = rt.connector.http1_only();
    let io = tower_service::Service::call(&mut connector, uri.clone()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "websocket upstream connection");
        }
    });
    // The dedicated connection is not a proxy hop: origin-form request target.
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = target.parse::<http::Uri>()?;
    set_upgrade_headers(req.headers_mut());
    let sent = tokio::time::timeout(rt.upstream.header_timeout(), sender.send_request(req)).await;
    let resp = match sent {
        Err(_) => return Err(UpstreamError::HeaderTimeout),
        Ok(Err(e)) => return Err(UpstreamError::Handshake(e)),
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(expected) = expected_accept {
            let answered = resp.headers().get(header::SEC_WEBSOCKET_ACCEPT);
            if expected.is_none() || answered.map(HeaderValue::as_bytes) != expected.as_deref() {
                return Err(UpstreamError::AcceptMismatch);
            }
        }
        Ok(Handshake::Switched(resp))
    } else {
        Ok(Handshake::Answered(resp))
    }
}

/// Answers the client (101, or 200 for extended CONNECT) and relays bytes in the background
/// until the WebSocket closes; the audit record is written then.
pub fn relay(
    relays: &Relays,
    audit: PendingAudit,
    client: ClientSide,
    mut upstream: Response<Incoming>,
) -> Response<AuditedBody> {
    let status = upstream.status().as_u16();
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let (mut parts, _) = upstream.into_parts();
    if client.kind == Kind::ExtendedConnect {
        parts.status = StatusCode::OK;
        parts.version = http::Version::HTTP_2;
        hop_by_hop::strip_response(&mut parts.headers);
        parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    }
    let closing = relays.closing.clone();
    relays.tasks.spawn(async move {
        let (c, u) = tokio::join!(client.upgrade, upstream_upgrade);
        match (c, u) {
            (Ok(c), Ok(u)) => {
                let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                tokio::select! {
                    res = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                        if let Err(e) = res {
                            // Resets after the WebSocket was established are how many clients
                            // leave; the WebSocket itself was allowed and worked.
                            tracing::debug!(error = %e, "websocket relay ended");
                        }
                    }
                    _ = closing.cancelled() => {}
                }
                outcome::finish(audit, Outcome::Relayed { status });
            }
            (Err(_), _) => outcome::finish(audit, Outcome::ClientCancel { status }),
            (Ok(_), Err(source)) => {
                let failure = Failure::WebSocketUpgrade { status, source };
                outcome::finish(audit, Outcome::Failed(failure));
            }
        }
    });
    Response::from_parts(parts, AuditedBody::unaudited(body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_http1_upgrade_only_with_both_tokens() {
        let mut req = Request::builder()
            .uri("/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .body(())
            .unwrap();
        assert_eq!(detect(&mut req).map(|c| c.kind), Some(Kind::Upgrade));
        let mut req = Request::builder()
            .uri("/chat")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(detect(&mut req).is_none());
    }

    #[test]
    fn accept_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn extended_connect_becomes_an_http1_handshake() {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri("https://a.test/chat")
            .header("sec-websocket-version", "13")
            .extension(Protocol::from_static("websocket"))
            .body(())
            .unwrap();
        assert_eq!(
            detect(&mut req).map(|c| c.kind),
            Some(Kind::ExtendedConnect)
        );
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert_eq!(req.headers()["connection"], "Upgrade");
        let key = base64::engine::general_purpose::STANDARD
            .decode(req.headers()["sec-websocket-key"].as_bytes())
            .unwrap();
        assert_eq!(key.len(), 16);
        assert!(req.extensions().get::<Protocol>().is_none());
    }
}
