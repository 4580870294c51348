//! Resolve → deny-CIDR check on each address → TCP connect → TLS. Nothing is dialled that the
//! deny list covers, whatever the name resolved to. With `proxy.upstream_proxy`, the dial step
//! goes through the proxy instead (see `super::proxy`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::io::{MaybeTls, UpstreamIo};
use super::proxy::{self, DialedStream, UpstreamProxies};
use crate::policy::unmap;
use crate::resolve::Resolver;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("dial tcp {addr}: denied by upstream_deny_cidrs: {ip} in {net}")]
    Denied {
        addr: SocketAddr,
        ip: IpAddr,
        net: IpNet,
    },
    #[error("{reason}")]
    Resolve { host: String, reason: String },
    #[error("dial tcp {addr}: {reason}")]
    Dial { addr: SocketAddr, reason: String },
    #[error("tls handshake with {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("invalid upstream uri: {0}")]
    BadUri(String),
    /// Anything that failed at or through the upstream proxy; `proxy` never has credentials.
    #[error("proxy {proxy}: {reason}")]
    Proxy { proxy: String, reason: String },
}

/// `upstream_deny_cidrs`, checked on the literal address being dialled.
#[derive(Debug, Clone, Default)]
pub struct DenyList(Vec<IpNet>);

impl DenyList {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// The first denied prefix containing `ip` (IPv4-mapped IPv6 is unmapped first).
    pub fn check(&self, ip: IpAddr) -> Option<IpNet> {
        let ip = unmap(ip);
        self.0.iter().find(|n| n.contains(&ip)).copied()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

#[derive(Clone)]
pub struct Connector {
    resolver: Arc<Resolver>,
    deny: Arc<DenyList>,
    tls: TlsConnector,
    /// The same TLS client offering only `http/1.1` (see [`Connector::http1_only`]), built once.
    tls_http1: TlsConnector,
    proxies: Arc<UpstreamProxies>,
}

impl Connector {
    pub fn new(resolver: Arc<Resolver>, deny: DenyList, tls: Arc<rustls::ClientConfig>) -> Self {
        let mut http1 = (*tls).clone();
        http1.alpn_protocols = vec![crate::tls::ALPN_HTTP11.to_vec()];
        Self {
            resolver,
            deny: Arc::new(deny),
            tls: TlsConnector::from(tls),
            tls_http1: TlsConnector::from(Arc::new(http1)),
            proxies: Arc::default(),
        }
    }

    /// The same dial path (resolver, upstream proxies, TLS roots) without `upstream_deny_cidrs`,
    /// for the agent's own calls to operator-configured endpoints (token endpoints, the
    /// metadata server on 169.254.169.254), which the deny list does not govern.
    pub fn without_deny_list(&self) -> Connector {
        let mut c = self.clone();
        c.deny = Arc::new(DenyList::new(Vec::new()));
        c
    }

    /// The same connector dialling every destination directly, whatever `proxy.upstream_proxy`
    /// says (the cloud metadata server must be this host's, never the proxy's).
    pub fn without_upstream_proxies(&self) -> Connector {
        let mut c = self.clone();
        c.proxies = Arc::default();
        c
    }

    /// Routes every dial through `proxies` (unless `no_proxy` exempts the destination).
    pub fn with_upstream_proxies(mut self, proxies: UpstreamProxies) -> Self {
        proxies.log_startup(&self.deny);
        self.proxies = Arc::new(proxies);
        self
    }

    /// A byte stream to the TLS destination `host:port` (no TLS is done here): through the
    /// `https_proxy` when one applies, else direct.
    pub async fn dial(&self, host: &str, port: u16) -> Result<DialedStream, ConnectError> {
        self.dial_for(true, host, port).await
    }

    /// As [`Connector::dial`]; `https` is the destination's scheme and picks `https_proxy` or
    /// `http_proxy`.
    pub async fn dial_for(
        &self,
        https: bool,
        host: &str,
        port: u16,
    ) -> Result<DialedStream, ConnectError> {
        match self.proxies.route(https, host, port) {
            Some(p) => proxy::dial(self, &self.proxies, p, host, port).await,
            None => self.dial_direct(host, port).await.map(DialedStream::Left),
        }
    }

    /// Every address of `host` (an IP literal is itself).
    pub(super) async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ConnectError> {
        let ips = self
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|e| ConnectError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        if ips.is_empty() {
            return Err(ConnectError::Resolve {
                host: host.into(),
                reason: format!("lookup {host}: no addresses"),
            });
        }
        Ok(ips)
    }

    /// Dials `host:port` directly, trying each resolved address that the deny list allows, in
    /// order.
    pub(super) async fn dial_direct(
        &self,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, ConnectError> {
        let ips = self.lookup(host).await?;
        let mut last_err = None;
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            if let Err(e) = self.check_deny(addr) {
                last_err = Some(e);
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => {
                    last_err = Some(ConnectError::Dial {
                        addr,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    last_err = Some(ConnectError::Dial {
                        addr,
                        reason: "i/o timeout".into(),
                    })
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ConnectError::Resolve {
            host: host.into(),
            reason: format!("lookup {host}: no addresses"),
        }))
    }

    /// The deny error for `addr` when `upstream_deny_cidrs` covers its address.
    pub(super) fn check_deny(&self, addr: SocketAddr) -> Result<(), ConnectError> {
        match self.deny.check(addr.ip()) {
            Some(net) => Err(ConnectError::Denied {
                addr,
                ip: unmap(addr.ip()),
                net,
            }),
            None => Ok(()),
        }
    }

    /// The full connection for `uri`: dial (direct or through the proxy), then TLS for https.
    pub async fn connect(&self, uri: &http::Uri) -> Result<UpstreamIo, ConnectError> {
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = self.dial_for(tls, host, port).await?;
        if !tls {
            return Ok(UpstreamIo(TokioIo::new(MaybeTls::Left(tcp))));
        }
        let name = ServerName::try_from(host.to_string()).map_err(|e| ConnectError::Tls {
            host: host.into(),
            reason: e.to_string(),
        })?;
        let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Tls {
                host: host.into(),
                reason: "handshake timeout".into(),
            })?
            .map_err(|e| ConnectError::Tls {
                host: host.into(),
                reason: e.to_string(),
            })?;
        Ok(UpstreamIo(TokioIo::new(MaybeTls::Right(Box::new(stream)))))
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await })
    }
}

impl Connector {
    /// The same connector offering only `http/1.1` by ALPN, for a dedicated connection that
    /// must speak HTTP/1.1 whatever the server prefers (a WebSocket Upgrade cannot run on a
    /// connection where the server chose h2). Same resolve, deny-list and TLS checks.
    pub fn http1_only(&self) -> Connector {
        let mut c = self.clone();
        c.tls = self.tls_http1.clone();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_list_unmaps_v4_mapped() {
        let d = DenyList::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(d.check("127.0.0.1".parse().unwrap()).is_some());
        assert!(d.check("::ffff:127.0.0.2".parse().unwrap()).is_some());
        assert!(d.check("::1".parse().unwrap()).is_some());
        assert!(d.check("10.0.0.1".parse().unwrap()).is_none());
    }
}
