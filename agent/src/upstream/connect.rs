//! The upstream connector: a [`DirectDialer`] dial (resolve → deny-CIDR check on each address →
//! TCP connect), or the same through `proxy.upstream_proxy` (see [`super::proxy`]), then TLS.
//! Nothing is dialled that the deny list covers, whatever the name resolved to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::direct::{DenyList, DirectDialer};
use super::error::ConnectError;
use super::io::{MaybeTls, UpstreamIo};
use super::proxy::{self, DialedStream, UpstreamProxies};
use crate::resolve::Resolver;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Connector {
    direct: DirectDialer,
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
            direct: DirectDialer::new(resolver, deny),
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
        c.direct = self.direct.without_deny_list();
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
        proxies.log_startup(self.direct.deny_list());
        self.proxies = Arc::new(proxies);
        self
    }

    /// The same connector offering only `http/1.1` by ALPN, for a dedicated connection that
    /// must speak HTTP/1.1 whatever the server prefers (a WebSocket Upgrade cannot run on a
    /// connection where the server chose h2). Same resolve, deny-list and TLS checks.
    pub fn http1_only(&self) -> Connector {
        let mut c = self.clone();
        c.tls = self.tls_http1.clone();
        c
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
            Some(p) => proxy::dial(&self.direct, &self.proxies, p, host, port).await,
            None => self.direct.dial(host, port).await.map(DialedStream::Left),
        }
    }

    /// The full connection for `uri`: dial (direct or through the proxy), then TLS for https.
    pub async fn connect(&self, uri: &http::Uri) -> Result<UpstreamIo, ConnectError> {
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::BadUri(uri.clone()))?;
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
        let name =
            ServerName::try_from(host.to_string()).map_err(|source| ConnectError::ServerName {
                host: host.into(),
                source,
            })?;
        let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::TlsTimeout { host: host.into() })?
            .map_err(|source| ConnectError::Tls {
                host: host.into(),
                source,
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
