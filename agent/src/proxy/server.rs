//! Connection serving for the HTTP and HTTPS (MITM) listeners: HTTP/1.1 and HTTP/2.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::first_byte::FirstByteDeadline;
use super::head_limits::{self, MAX_HEAD_BYTES, MAX_HEADERS};
use super::{ConnInfo, Runtime, handler};
use crate::accept::accept_loop;
use crate::identify::{ClientAddr, LocalAddr};
use crate::tls::TlsError;

/// Slow clients may not hold a connection open forever before sending headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve_http(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_each("http", rt, listener, tracker, shutdown, http_conn).await;
}

async fn http_conn(
    rt: Arc<Runtime>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let conn = accepted(&rt, &stream, peer);
    serve_conn(rt, stream, conn, shutdown).await;
}

pub async fn serve_https(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_each("https", rt, listener, tracker, shutdown, https_conn).await;
}

async fn https_conn(
    rt: Arc<Runtime>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut conn = accepted(&rt, &stream, peer);
    let fallback = conn.dest_ip().map(|ip| ip.to_string());
    let hs = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls_accept(&rt, stream, fallback)).await;
    match hs {
        Ok(Ok((tls, sni))) => {
            conn.tls = true;
            conn.sni = sni;
            serve_conn(rt, tls, conn, shutdown).await;
        }
        Ok(Err(reason)) => {
            tracing::debug!(client = %peer, reason = %reason, "tls handshake failed")
        }
        Err(_) => tracing::debug!(client = %peer, "tls handshake timed out"),
    }
}

/// [`accept_loop`] handing each connection to `serve` with the runtime.
pub(crate) async fn accept_each<F, Fut>(
    name: &'static str,
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(Arc<Runtime>, TcpStream, SocketAddr, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_loop(
        name,
        listener,
        tracker,
        shutdown,
        move |stream, peer, shutdown| serve(rt.clone(), stream, peer, shutdown),
    )
    .await;
}

/// Identify, connection level, on a listener the redirect targets: the original destination
/// and identity (eBPF redirect), or the uid of a direct local peer.
pub(crate) fn accepted(rt: &Runtime, stream: &TcpStream, peer: SocketAddr) -> ConnInfo {
    let local = stream.local_addr().ok().map(LocalAddr);
    ConnInfo::accepted(rt.identify.redirected(ClientAddr(peer), local)).limited(&rt.conn_limits)
}

/// Identify, connection level, on a listener the redirect never targets (the tunnel): in eBPF
/// mode the local peer's uid picks the profile.
pub(crate) fn accepted_direct(rt: &Runtime, stream: &TcpStream, peer: SocketAddr) -> ConnInfo {
    let local = stream.local_addr().ok().map(LocalAddr);
    ConnInfo::accepted(rt.identify.direct(ClientAddr(peer), local)).limited(&rt.conn_limits)
}

/// Why a TLS handshake with a client did not complete (logged at debug; nothing is audited).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no SNI provided")]
    NoSni,
    #[error("no CA configured")]
    NoCa,
    #[error("{0}")]
    Leaf(#[from] TlsError),
}

/// Reads the ClientHello, mints (or reuses) a leaf for its SNI, and completes the handshake.
/// Without SNI, a redirected connection is served a certificate for its original destination
/// IP (`fallback`) and judged by that address; other connections without SNI are refused.
pub(crate) async fn tls_accept<I>(
    rt: &Runtime,
    stream: I,
    fallback: Option<String>,
) -> Result<(tokio_rustls::server::TlsStream<I>, Option<String>), HandshakeError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let sni = start.client_hello().server_name().map(str::to_string);
    let name = sni.clone().or(fallback).ok_or(HandshakeError::NoSni)?;
    let cache = rt.leaf_cache.as_ref().ok_or(HandshakeError::NoCa)?;
    let config = cache.server_config(&name).await?;
    let tls = start.into_stream(config).await?;
    Ok((tls, sni))
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it closes or shutdown asks it to finish.
pub(crate) async fn serve_conn<I>(
    rt: Arc<Runtime>,
    io: I,
    conn: ConnInfo,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let (svc_rt, svc_conn) = (rt.clone(), conn.clone());
    let svc = service_fn(move |req| handler::handle(svc_rt.clone(), svc_conn.clone(), req));
    // Past a connection limit every request is answered 503 (and audited) by the handler; the
    // connection closes after its first answer (`Connection: close`).
    // HTTP/1.1 or HTTP/2, chosen by the client's first bytes (which follow the ALPN it
    // negotiated; on the plain listener, HTTP/2 is h2c with prior knowledge), with upgrades
    // (WebSocket) and, on HTTP/2, extended CONNECT (RFC 8441).
    let builder = http_builder();
    let io = FirstByteDeadline::new(io, HEADER_READ_TIMEOUT);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let ended = tokio::select! {
        r = served.as_mut() => r,
        _ = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    // A head over the limits never reaches the handler: hyper answered 431 and ended the
    // connection with this error, so its audit record is written here.
    if let Err(e) = ended {
        head_limits::audit_parse_error(&rt, &conn, e.as_ref());
    }
}

/// HTTP/1.1 keeps the client's header casing, has a header read timeout and explicit head
/// limits (431 past them); HTTP/2 accepts `:protocol` so WebSocket can be bootstrapped over it.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .preserve_header_case(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    builder
}
