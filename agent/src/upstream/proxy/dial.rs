//! Dialling a destination through a proxy.
//!
//! `upstream_deny_cidrs` is checked on what the agent itself dials: the proxy's addresses
//! (a denied proxy is never dialled; the request fails with the deny error). The final hop is
//! dialled by the proxy, so it is checked where the agent knows the address: an IP-literal
//! destination, and every address of a `socks5://` destination (the agent resolves those
//! names itself). Names sent to an HTTP(S) proxy or to `socks5h://` are resolved by the proxy;
//! the deny list cannot see where they lead, as in iron-proxy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_socks::TargetAddr;
use tokio_socks::tcp::Socks5Stream;
use tokio_util::task::AbortOnDropHandle;

use super::UpstreamProxies;
use super::stream::DialedStream;
use super::url::{ProxyKind, ProxyUrl};
use crate::upstream::direct::DirectDialer;
use crate::upstream::error::{ConnectError, ProxyError, SocksError, TunnelError};

/// TLS handshake with an `https://` proxy.
const PROXY_TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// The CONNECT or SOCKS exchange, which includes the proxy's own dial to the destination.
const PROXY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream to `host:port` through `proxy`.
pub(in crate::upstream) async fn dial(
    direct: &DirectDialer,
    proxies: &UpstreamProxies,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<DialedStream, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        direct.check_deny(SocketAddr::new(ip, port))?;
    }
    tracing::debug!(proxy = %proxy, host, port, "dialling through upstream proxy");
    let fail = |source: ProxyError| ConnectError::Proxy {
        proxy: proxy.to_string(),
        source,
    };
    match proxy.kind {
        ProxyKind::Http => {
            let tcp = dial_proxy(direct, proxy).await?;
            let tunnel = http_connect(tcp, proxy, host, port).await.map_err(fail)?;
            Ok(DialedStream::Right(TokioIo::new(tunnel)))
        }
        ProxyKind::Https => {
            let tcp = dial_proxy(direct, proxy).await?;
            let tls = proxies.tls().ok_or_else(|| fail(ProxyError::NoTls))?;
            let name = ServerName::try_from(proxy.host.clone())
                .map_err(|e| fail(ProxyError::ServerName(e)))?;
            let stream = tokio::time::timeout(PROXY_TLS_TIMEOUT, tls.connect(name, tcp))
                .await
                .map_err(|_| fail(ProxyError::TlsTimeout))?
                .map_err(|e| fail(ProxyError::TlsHandshake(e)))?;
            let tunnel = http_connect(stream, proxy, host, port)
                .await
                .map_err(fail)?;
            Ok(DialedStream::Right(TokioIo::new(tunnel)))
        }
        ProxyKind::Socks5 { remote_dns: true } => {
            let tcp = dial_proxy(direct, proxy).await?;
            let target = match host.parse::<IpAddr>() {
                Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
                Err(_) => TargetAddr::Domain(host.into(), port),
            };
            socks5(tcp, proxy, target)
                .await
                .map(DialedStream::Left)
                .map_err(fail)
        }
        ProxyKind::Socks5 { remote_dns: false } => socks5_resolved(direct, proxy, host, port).await,
    }
}

/// TCP to the proxy itself, through the deny list like any direct dial.
async fn dial_proxy(direct: &DirectDialer, proxy: &ProxyUrl) -> Result<TcpStream, ConnectError> {
    direct
        .dial(&proxy.host, proxy.port)
        .await
        .map_err(|e| ConnectError::Proxy {
            proxy: proxy.to_string(),
            source: ProxyError::Dial(Box::new(e)),
        })
}

/// `CONNECT host:port` with hyper's HTTP/1.1 client; the upgraded connection is the tunnel.
async fn http_connect<S>(
    io: S,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<Upgraded, ProxyError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await?;
        // Dropping the handle (timeout, error) closes the proxy connection.
        let _driver = AbortOnDropHandle::new(tokio::spawn(conn.with_upgrades()));
        let mut req = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(authority.as_str())
            .header(http::header::HOST, authority.as_str());
        if let Some(auth) = proxy.basic_auth() {
            req = req.header(http::header::PROXY_AUTHORIZATION, auth);
        }
        let req = req.body(Empty::new())?;
        let resp = sender.send_request(req).await?;
        if !resp.status().is_success() {
            return Err(TunnelError::Status(resp.status()));
        }
        Ok::<_, TunnelError>(hyper::upgrade::on(resp).await?)
    };
    tokio::time::timeout(PROXY_HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| TunnelError::Timeout)
        .and_then(|r| r)
        .map_err(|source| ProxyError::Connect { authority, source })
}

async fn socks5(
    tcp: TcpStream,
    proxy: &ProxyUrl,
    target: TargetAddr<'_>,
) -> Result<TcpStream, ProxyError> {
    let shown = match &target {
        TargetAddr::Ip(a) => a.to_string(),
        TargetAddr::Domain(h, p) => format!("{h}:{p}"),
    };
    let exchange = async {
        match &proxy.credentials {
            Some(c) => {
                Socks5Stream::connect_with_password_and_socket(
                    tcp,
                    target,
                    c.user.expose(),
                    c.password.expose(),
                )
                .await
            }
            None => Socks5Stream::connect_with_socket(tcp, target).await,
        }
    };
    let socks = |source: SocksError| ProxyError::Socks {
        target: shown.clone(),
        source,
    };
    tokio::time::timeout(PROXY_HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| socks(SocksError::Timeout))?
        .map(Socks5Stream::into_inner)
        .map_err(|e| socks(SocksError::Socks(e)))
}

/// `socks5://`: the agent resolves the name and tries each address the deny list allows.
async fn socks5_resolved(
    direct: &DirectDialer,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> Result<DialedStream, ConnectError> {
    let ips = direct.lookup(host).await?;
    let mut last_err = None;
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        if let Err(e) = direct.check_deny(addr) {
            last_err = Some(e);
            continue;
        }
        let tcp = dial_proxy(direct, proxy).await?;
        match socks5(tcp, proxy, TargetAddr::Ip(addr)).await {
            Ok(s) => return Ok(DialedStream::Left(s)),
            Err(source) => {
                last_err = Some(ConnectError::Proxy {
                    proxy: proxy.to_string(),
                    source,
                })
            }
        }
    }
    Err(last_err.unwrap_or_else(|| ConnectError::NoAddresses { host: host.into() }))
}
