//! Targets fed through a stream: what a workload sends on a connection.

use std::convert::Infallible;

use http::uri::Scheme;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{Segmented, block_on};
use crate::message::ProxyResponse;
use crate::message::body;
use crate::postgres::relay::{Relay, Stats};
use crate::postgres::sql::Policy;
use crate::postgres::wire::{self, Startup};
use crate::tunnel::{connect, sniff, socks5};

/// Request bodies the HTTP/1 target reads before answering.
const MAX_BODY: usize = 64 * 1024;
/// Startup packets a PostgreSQL client may send before its StartupMessage (SSL, GSSENC, ...).
const MAX_PRELUDES: usize = 4;

/// ClientHello/SNI extraction (sni-only passthrough and the MITM listener's peek), with the
/// hello cut across reads: rustls reassembles records and handshake messages.
pub fn client_hello(data: &[u8]) {
    let mut io = Segmented::new(data);
    block_on(async move {
        if let Ok(hello) = crate::sni::hello::read(&mut io).await {
            let _ = hello.sni.map(|s| crate::identify::HostName::new(&s));
        }
    });
}

/// The tunnel listener's first request head: CONNECT (target parsing, 400s) or another method
/// handed to the HTTP server; what follows a CONNECT head goes to the first-bytes sniffer.
pub fn connect_head(data: &[u8]) {
    let mut io = Segmented::new(data);
    block_on(async move {
        match connect::read_request(&mut io).await {
            Ok(connect::Request::Connect { target, rest }) => {
                let _ = target.authority();
                let _ = sniff::classify(&rest);
            }
            Ok(connect::Request::Other { buffered }) => {
                let _ = sniff::classify(&buffered);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}

/// The SOCKS5 greeting and request, answers included.
pub fn socks5(data: &[u8]) {
    let mut io = Segmented::new(data);
    block_on(async move {
        if let Ok(target) = socks5::read_request(&mut io).await {
            let _ = target.authority();
        }
    });
}

/// The HTTP/1.1 (and h2c prior-knowledge) head path of the HTTP listener: the listener's own
/// hyper builder (head limits, header casing, upgrades) and, for each request, the handler's
/// steps before the pipeline that need no runtime: WebSocket detection and request identify.
/// The policy and the pipeline themselves need a full runtime and upstream sockets: not here.
/// The seed's low bit picks plain HTTP or a TLS connection with an SNI (identify compares them).
pub fn http1_head(data: &[u8]) {
    let tls = data.first().is_some_and(|b| b & 1 == 1);
    let io = Segmented::new(data);
    block_on(async move {
        let svc = service_fn(move |req| async move { Ok::<_, Infallible>(head(req, tls).await) });
        let served = crate::proxy::server::http_builder()
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .await;
        let _ = served.map_err(|e| e.to_string());
    });
}

async fn head(mut req: Request<Incoming>, tls: bool) -> ProxyResponse {
    let ws = crate::proxy::websocket::detect(&mut req);
    let (scheme, sni) = if tls {
        (Scheme::HTTPS, Some("fuzz.example"))
    } else {
        (Scheme::HTTP, None)
    };
    // Identified or not, nothing is forwarded: the answer only has to depend on the verdict.
    let status = match crate::identify::identify(&req, scheme, sni) {
        Ok(target) if ws.is_some() || target.host.is_empty() => StatusCode::FORBIDDEN,
        Ok(_) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::BAD_REQUEST,
    };
    // The body is framed by hyper (content-length, chunked) as the pipeline would read it.
    let _ = Limited::new(req.into_body(), MAX_BODY).collect().await;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    resp
}

/// PostgreSQL: startup packets (SSL/GSSENC/cancel requests, the StartupMessage), one
/// handshake message, then the relay with its statement policy, framing client messages and
/// server answers. The second byte, times 8, is how many trailing bytes the server sends.
pub fn postgres_wire(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let Some((&upstream_len, rest)) = rest.split_first() else {
        return;
    };
    let cut = rest.len().saturating_sub(usize::from(upstream_len) * 8);
    let (client, server) = rest.split_at(cut);
    let mut client_in = vec![seed];
    client_in.extend_from_slice(client);
    let mut server_in = vec![seed];
    server_in.extend_from_slice(server);
    let mut client = Segmented::new(&client_in);
    let upstream = Segmented::new(&server_in).held_open();
    block_on(async move {
        if !postgres_handshake(&mut client).await {
            return;
        }
        let policy = Policy::new(["search_path", "role"]);
        let stats = Stats::default();
        let on_refusal = |r: crate::postgres::sql::Refusal, _: &str| {
            let _ = r.message();
        };
        let relay = Relay {
            policy: &policy,
            marker: "iron_proxy_refused_00f1e2d3_".into(),
            stats: &stats,
            on_refusal: &on_refusal,
        };
        let _ = relay.run(client, upstream).await;
    });
}

/// The login side of the wire: `false` when the session would end there.
async fn postgres_handshake(client: &mut Segmented) -> bool {
    for _ in 0..MAX_PRELUDES {
        match wire::read_startup(client).await {
            Ok(Startup::Message { params, .. }) => {
                let _ = Startup::param(&params, "user");
                return match wire::read_message(client).await {
                    Ok((_, body)) => {
                        let _ = wire::error_fields(&body);
                        true
                    }
                    Err(_) => false,
                };
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}
