//! Connection serving for the HTTP and HTTPS (MITM) listeners.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConnInfo, Runtime, handler};
use crate::accept::accept_loop;

/// Slow clients may not hold a connection open forever before sending headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve_http(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_loop(
        "http",
        listener,
        tracker,
        shutdown,
        move |stream, peer, shutdown| {
            let rt = rt.clone();
            async move {
                let conn = ConnInfo {
                    client: peer,
                    tls: false,
                    sni: None,
                    dest_ip: None,
                };
                serve_conn(rt, stream, conn, shutdown).await;
            }
        },
    )
    .await;
}

pub async fn serve_https(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_loop(
        "https",
        listener,
        tracker,
        shutdown,
        move |stream, peer, shutdown| {
            let rt = rt.clone();
            async move {
                let hs = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls_accept(&rt, stream)).await;
                match hs {
                    Ok(Ok((tls, sni))) => {
                        let conn = ConnInfo {
                            client: peer,
                            tls: true,
                            sni: Some(sni),
                            dest_ip: None,
                        };
                        serve_conn(rt, tls, conn, shutdown).await;
                    }
                    Ok(Err(reason)) => {
                        tracing::debug!(client = %peer, reason = %reason, "tls handshake failed")
                    }
                    Err(_) => tracing::debug!(client = %peer, "tls handshake timed out"),
                }
            }
        },
    )
    .await;
}

/// Reads the ClientHello, mints (or reuses) a leaf for its SNI, and completes the handshake.
async fn tls_accept(
    rt: &Runtime,
    stream: TcpStream,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, String), String> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|e| e.to_string())?;
    let sni = start
        .client_hello()
        .server_name()
        .map(str::to_string)
        .ok_or("no SNI provided")?;
    let cache = rt.leaf_cache.as_ref().ok_or("no CA configured")?;
    let config = cache.server_config(&sni).await.map_err(|e| e.to_string())?;
    let tls = start.into_stream(config).await.map_err(|e| e.to_string())?;
    Ok((tls, sni))
}

/// Serves HTTP/1.1 on one connection until it closes or shutdown asks it to finish.
async fn serve_conn<I>(rt: Arc<Runtime>, io: I, conn: ConnInfo, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let svc = service_fn(move |req| handler::handle(rt.clone(), conn.clone(), req));
    let mut builder = http1::Builder::new();
    builder
        .preserve_header_case(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let served = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}
