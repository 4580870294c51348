//! The upstream step of one request: point it at the destination identify fixed, send it (or
//! the WebSocket handshake), and hand back the upstream's response.

use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn::ConnInfo;
use super::runtime::Runtime;
use super::websocket::{self, ClientSide, Handshake};
use crate::identify::Target;
use crate::mcp::gateway::GatewayRouted;
use crate::message::header_case;
use crate::message::hop_by_hop;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::outcome::{Failure, Outcome};

/// What came back from upstream.
pub enum Sent {
    Response(ProxyResponse),
    /// The upstream switched protocols: the WebSocket relay takes over.
    Upgraded(ClientSide, Response<Incoming>),
}

/// Sends the (transformed) request upstream. Nothing is dialled before this point.
pub async fn send(
    rt: &Runtime,
    conn: &ConnInfo,
    mut req: ProxyRequest,
    target: &Target,
    ws: Option<ClientSide>,
) -> Result<Sent, Box<Outcome>> {
    prepare(&mut req, target).map_err(|e| Box::new(Outcome::Failed(Failure::BuildRequest(e))))?;
    let rerouted = req.extensions().get::<GatewayRouted>().is_some();
    if let Some(port) = pinned_port(conn).filter(|_| !rerouted) {
        pin_port(req.uri_mut(), port);
    }
    header_case::apply(&mut req)
        .await
        .map_err(|e| Box::new(Outcome::Failed(e.into())))?;
    let upstream = match ws {
        None => rt.upstream.send(req).await,
        Some(client) => match websocket::handshake(rt, &client, req).await {
            Ok(Handshake::Switched(resp)) => return Ok(Sent::Upgraded(client, resp)),
            Ok(Handshake::Answered(resp)) => Ok(resp),
            Err(e) => Err(e),
        },
    };
    let upstream = upstream.map_err(|e| Box::new(Outcome::Failed(e.into())))?;
    let mut resp: ProxyResponse = upstream.map(|b| b.map_err(Into::into).boxed_unsync());
    hop_by_hop::strip_response(resp.headers_mut());
    Ok(Sent::Response(resp))
}

/// Points the request at the upstream: absolute URI, `Host` as the client named it, and no
/// hop-by-hop headers. Nothing is added (no Via, User-Agent or Accept-Encoding).
///
/// One model whatever the client spoke: the request leaves as HTTP/1.1 and the pooled client
/// sends it as HTTP/2 when the upstream negotiated h2 (then the URI's authority becomes
/// `:authority`, the equal `Host` rides along as RFC 9113 §8.3.1 permits, and `TE: trailers`
/// survives for gRPC).
fn prepare(req: &mut ProxyRequest, target: &Target) -> Result<(), http::Error> {
    let uri = target.upstream_uri(req.uri())?;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    hop_by_hop::strip_request(req.headers_mut());
    // Usually the client's Host already is the authority: keep it rather than re-allocate.
    let host_matches = req
        .headers()
        .get(header::HOST)
        .is_some_and(|h| h.as_bytes() == target.authority.as_str().as_bytes());
    if !host_matches && let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
        req.headers_mut().insert(header::HOST, v);
    }
    Ok(())
}

/// The port the client really connected to, which the upstream dial must keep whatever `Host`
/// names (`Host: allowed.example:6379` must not turn a connection to port 80 into one to a
/// database): inside a tunnel the port it was opened to, on a redirected connection the
/// original destination's port.
fn pinned_port(conn: &ConnInfo) -> Option<u16> {
    match (&conn.tunnel, &conn.identity.origin) {
        (Some(t), _) => Some(t.port),
        (None, Some(o)) => Some(o.orig_dst.port()),
        (None, None) => None,
    }
}

/// Replaces the port of `uri` (the client believes it is connected to that port).
pub fn pin_port(uri: &mut http::Uri, port: u16) {
    let Some(host) = uri.host() else { return };
    let Ok(authority) = format!("{host}:{port}").parse::<http::uri::Authority>() else {
        return;
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.authority = Some(authority);
    if let Ok(u) = http::Uri::from_parts(parts) {
        *uri = u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_port_replaces_the_port_only() {
        let mut u: http::Uri = "https://a.test/x?y=1".parse().unwrap();
        pin_port(&mut u, 8443);
        assert_eq!(u, "https://a.test:8443/x?y=1");
        let mut u: http::Uri = "http://[::1]:80/".parse().unwrap();
        pin_port(&mut u, 8080);
        assert_eq!(u, "http://[::1]:8080/");
    }
}
