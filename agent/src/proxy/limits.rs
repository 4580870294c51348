//! Connection limits (`proxy.max_connections`, `proxy.max_connections_per_client`): one
//! workload cannot take every socket and task of the host. A connection past a limit is still
//! answered (503, `reason: connection_limit` or `client_connection_limit`) and audited, then
//! closed; its permit is never taken.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::identify::ConnIdentity;

/// Who a per-client limit counts: the kernel's uid when the agent knows it, else the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Uid(u32),
    Ip(std::net::IpAddr),
}

impl ClientKey {
    pub fn of(identity: &ConnIdentity) -> Self {
        match identity.uid() {
            Some(uid) => ClientKey::Uid(uid.0),
            None => ClientKey::Ip(identity.client.0.ip()),
        }
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Global,
    PerClient,
}

impl LimitHit {
    /// The audit `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            LimitHit::Global => "connection_limit",
            LimitHit::PerClient => "client_connection_limit",
        }
    }
}

#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_client: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<ClientKey, usize>,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            counts: Mutex::default(),
        })
    }

    /// A permit for one connection of `key`, held as long as the connection is served.
    pub fn acquire(self: &Arc<Self>, key: ClientKey) -> Result<ConnPermit, LimitHit> {
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            return Err(LimitHit::Global);
        }
        let n = c.per_client.entry(key.clone()).or_insert(0);
        if *n >= self.max_per_client {
            return Err(LimitHit::PerClient);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            limits: self.clone(),
            key,
        })
    }
}

/// Gives its slot back when the connection ends.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    key: ClientKey,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_client.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_per_client_limits_and_release() {
        let l = ConnLimits::new(3, 2);
        let a = || ClientKey::Ip("127.0.0.1".parse().unwrap());
        let b = ClientKey::Uid(1000);
        let p1 = l.acquire(a()).unwrap();
        let _p2 = l.acquire(a()).unwrap();
        assert_eq!(l.acquire(a()).unwrap_err(), LimitHit::PerClient);
        let _p3 = l.acquire(b.clone()).unwrap();
        assert_eq!(l.acquire(b.clone()).unwrap_err(), LimitHit::Global);
        drop(p1);
        assert!(l.acquire(a()).is_ok());
    }
}
