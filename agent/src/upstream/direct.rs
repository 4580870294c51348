//! Direct dials: resolve → deny-CIDR check on each address → TCP connect. The primitive both
//! the [`super::Connector`] and the upstream-proxy dialler ([`super::proxy`]) build on, so
//! nothing reaches a denied address whichever way it is dialled.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

use super::error::ConnectError;
use crate::policy::unmap;
use crate::resolve::Resolver;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The resolver and the deny list: everything a direct dial needs.
#[derive(Clone)]
pub struct DirectDialer {
    resolver: Arc<Resolver>,
    deny: Arc<DenyList>,
}

impl DirectDialer {
    pub fn new(resolver: Arc<Resolver>, deny: DenyList) -> Self {
        Self {
            resolver,
            deny: Arc::new(deny),
        }
    }

    pub fn deny_list(&self) -> &DenyList {
        &self.deny
    }

    /// The same dialler without a deny list.
    pub fn without_deny_list(&self) -> Self {
        Self {
            resolver: self.resolver.clone(),
            deny: Arc::default(),
        }
    }

    /// Every address of `host` (an IP literal is itself).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ConnectError> {
        let ips = self.resolver.lookup_ip(host).await?;
        if ips.is_empty() {
            return Err(ConnectError::NoAddresses { host: host.into() });
        }
        Ok(ips)
    }

    /// Dials `host:port`, trying each resolved address that the deny list allows, in order.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
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
                Ok(Err(source)) => last_err = Some(ConnectError::Dial { addr, source }),
                Err(_) => last_err = Some(ConnectError::DialTimeout { addr }),
            }
        }
        Err(last_err.unwrap_or_else(|| ConnectError::NoAddresses { host: host.into() }))
    }

    /// The deny error for `addr` when `upstream_deny_cidrs` covers its address.
    pub fn check_deny(&self, addr: SocketAddr) -> Result<(), ConnectError> {
        match self.deny.check(addr.ip()) {
            Some(net) => Err(ConnectError::Denied {
                addr,
                ip: unmap(addr.ip()),
                net,
            }),
            None => Ok(()),
        }
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

    #[tokio::test]
    async fn a_denied_address_is_never_dialled() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let resolver = Arc::new(Resolver::new(Some("127.0.0.1:9".parse().unwrap())).unwrap());
        let d = DirectDialer::new(
            resolver,
            DenyList::new(vec!["127.0.0.0/8".parse().unwrap()]),
        );
        let err = d.dial("127.0.0.1", port).await.unwrap_err();
        assert!(matches!(err, ConnectError::Denied { .. }), "{err}");
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err(), "nothing may have connected");
        assert!(d.without_deny_list().dial("127.0.0.1", port).await.is_ok());
    }
}
