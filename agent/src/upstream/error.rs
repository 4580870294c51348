//! Why an upstream could not be reached or did not answer. Each error keeps its cause as its
//! `source()`; its text (what the audit record's `error` shows) names the address or endpoint
//! and the cause, never a credential. [`UpstreamErrorKind`] is the taxonomy the outcome mapping
//! and the logs use.

use std::net::{IpAddr, SocketAddr};

use http::StatusCode;
use ipnet::IpNet;

use crate::resolve::ResolveError;

/// Dialling failed: nothing was exchanged with the destination.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("dial tcp {addr}: denied by upstream_deny_cidrs: {ip} in {net}")]
    Denied {
        addr: SocketAddr,
        ip: IpAddr,
        net: IpNet,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("lookup {host}: no addresses")]
    NoAddresses { host: String },
    #[error("dial tcp {addr}: {source}")]
    Dial {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dial tcp {addr}: i/o timeout")]
    DialTimeout { addr: SocketAddr },
    #[error("tls handshake with {host}: {source}")]
    ServerName {
        host: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("tls handshake with {host}: handshake timeout")]
    TlsTimeout { host: String },
    #[error("tls handshake with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("invalid upstream uri: {0}")]
    BadUri(http::Uri),
    /// Anything that failed at or through the upstream proxy; `proxy` never has credentials.
    #[error("proxy {proxy}: {source}")]
    Proxy { proxy: String, source: ProxyError },
}

/// What went wrong at an upstream proxy (`proxy.upstream_proxy`).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy itself could not be dialled (deny list, DNS, refused...).
    #[error("{0}")]
    Dial(#[source] Box<ConnectError>),
    #[error("no TLS configuration for an https proxy")]
    NoTls,
    #[error("tls: {0}")]
    ServerName(#[source] rustls_pki_types::InvalidDnsNameError),
    #[error("tls handshake timeout")]
    TlsTimeout,
    #[error("tls handshake: {0}")]
    TlsHandshake(#[source] std::io::Error),
    #[error("CONNECT {authority}: {source}")]
    Connect {
        authority: String,
        source: TunnelError,
    },
    #[error("SOCKS5 connect {target}: {source}")]
    Socks { target: String, source: SocksError },
}

/// An HTTP `CONNECT` exchange with a proxy that did not open a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Request(#[from] http::Error),
    #[error("proxy answered {0}")]
    Status(StatusCode),
}

/// A SOCKS5 exchange with a proxy that did not connect.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("timeout")]
    Timeout,
    #[error("{0}")]
    Socks(#[from] tokio_socks::Error),
}

/// The request could not be exchanged with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("timeout awaiting response headers")]
    HeaderTimeout,
    /// The pooled client failed; a connector error inside is found by
    /// [`UpstreamError::connect_cause`].
    #[error(transparent)]
    Exchange(#[from] hyper_util::client::legacy::Error),
    /// The dedicated (WebSocket) HTTP/1.1 connection failed.
    #[error(transparent)]
    Handshake(#[from] hyper::Error),
    #[error(transparent)]
    BadTarget(#[from] http::uri::InvalidUri),
    #[error("websocket upstream: Sec-WebSocket-Accept does not match the key sent")]
    AcceptMismatch,
}

/// The taxonomy of upstream failures. All of them answer 502 (iron-proxy, behaviour doc §6.3
/// and §6.4); the kind is for logs and for telling them apart in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The dialled address is in `upstream_deny_cidrs`.
    DeniedCidr,
    /// The name did not resolve.
    Dns,
    /// Nothing listens at the address.
    ConnectRefused,
    /// Any other failure to connect (unreachable, reset).
    Connect,
    /// Connecting, a handshake, or the response headers took too long.
    Timeout,
    /// TLS towards the upstream failed (certificate, handshake).
    Tls,
    /// The upstream proxy failed or refused.
    Proxy,
    /// The exchange itself failed (malformed response, closed mid-way, bad upgrade).
    Protocol,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeniedCidr => "denied_cidr",
            Self::Dns => "dns",
            Self::ConnectRefused => "connect_refused",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Proxy => "proxy",
            Self::Protocol => "protocol",
        }
    }
}

impl ConnectError {
    pub fn kind(&self) -> UpstreamErrorKind {
        use UpstreamErrorKind as K;
        match self {
            Self::Denied { .. } => K::DeniedCidr,
            Self::Resolve(_) | Self::NoAddresses { .. } => K::Dns,
            Self::Dial { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                K::ConnectRefused
            }
            Self::Dial { .. } => K::Connect,
            Self::DialTimeout { .. } | Self::TlsTimeout { .. } => K::Timeout,
            Self::ServerName { .. } | Self::Tls { .. } => K::Tls,
            Self::BadUri(_) => K::Protocol,
            Self::Proxy { .. } => K::Proxy,
        }
    }
}

impl UpstreamError {
    /// The connector's error, when dialling is what failed.
    pub fn connect_cause(&self) -> Option<&ConnectError> {
        match self {
            Self::Connect(c) => Some(c),
            Self::Exchange(e) => {
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    if let Some(c) = s.downcast_ref::<ConnectError>() {
                        return Some(c);
                    }
                    src = s.source();
                }
                None
            }
            _ => None,
        }
    }

    pub fn kind(&self) -> UpstreamErrorKind {
        match (self, self.connect_cause()) {
            (_, Some(c)) => c.kind(),
            (Self::HeaderTimeout, _) => UpstreamErrorKind::Timeout,
            _ => UpstreamErrorKind::Protocol,
        }
    }

    /// The text for the audit record's `error`: the connector's error when dialling failed
    /// (not the pooled client's wrapper), else the error with its causes.
    pub fn render(&self) -> String {
        if let Some(c) = self.connect_cause() {
            return c.to_string();
        }
        match self {
            // Every cause, as the client reported them.
            Self::Exchange(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                msg
            }
            Self::Handshake(e) => crate::telemetry::error_chain(e),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let refused = ConnectError::Dial {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.kind(), UpstreamErrorKind::ConnectRefused);
        assert!(refused.to_string().starts_with("dial tcp 127.0.0.1:1: "));
        let denied = ConnectError::Denied {
            addr,
            ip: addr.ip(),
            net: "127.0.0.0/8".parse().unwrap(),
        };
        assert_eq!(
            denied.to_string(),
            "dial tcp 127.0.0.1:1: denied by upstream_deny_cidrs: 127.0.0.1 in 127.0.0.0/8"
        );
        let through_proxy = ConnectError::Proxy {
            proxy: "http://p.test:3128".into(),
            source: ProxyError::Dial(Box::new(denied)),
        };
        assert_eq!(through_proxy.kind(), UpstreamErrorKind::Proxy);
        assert_eq!(
            through_proxy.to_string(),
            "proxy http://p.test:3128: dial tcp 127.0.0.1:1: denied by upstream_deny_cidrs: 127.0.0.1 in 127.0.0.0/8"
        );
        let up = UpstreamError::from(ConnectError::NoAddresses { host: "x".into() });
        assert_eq!(up.kind(), UpstreamErrorKind::Dns);
        assert_eq!(up.render(), "lookup x: no addresses");
        assert_eq!(
            UpstreamError::HeaderTimeout.kind(),
            UpstreamErrorKind::Timeout
        );
        assert_eq!(
            UpstreamError::HeaderTimeout.render(),
            "timeout awaiting response headers"
        );
    }
}
