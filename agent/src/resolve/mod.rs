//! Name resolution for upstream dials and DNS passthrough.
//!
//! With `dns.upstream_resolver` set, every lookup goes to that server (UDP, retried over TCP when
//! the answer is truncated); otherwise the system configuration (`/etc/resolv.conf`) is used.
//! `/etc/hosts` is honoured in both modes, as Go's resolver does for iron-proxy. The DNS module's
//! passthrough and the upstream connector share one [`Resolver`] so the agent has a single view of
//! what a name resolves to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// Per-attempt timeout towards the upstream server (iron-proxy dials with a 5 s timeout).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Record sets cached at most; TTLs are respected, this only bounds memory.
const CACHE_SIZE: u64 = 1024;
/// Negative answers are cached briefly so that a name created upstream shows up quickly.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(30);
/// A lookup slower than this is worth a warning: every request behind it stalls as long.
const SLOW_LOOKUP: Duration = Duration::from_secs(1);
/// At most one slow/failing warning per this interval (a dead resolver fails every request).
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN), or has no address at all.
    #[error("lookup {host}: no such host")]
    NotFound { host: String },
    /// The lookup itself failed: timeout, unreachable server, SERVFAIL, malformed name.
    #[error("lookup {host}: {source}")]
    Lookup { host: String, source: NetError },
    /// No answer within the caller's deadline.
    #[error("lookup {host}: no answer within {limit:?}")]
    Deadline { host: String, limit: Duration },
}

impl ResolveError {
    /// True when the name definitively does not exist, as opposed to a failed lookup.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

pub struct Resolver {
    upstream: Option<SocketAddr>,
    inner: TokioResolver,
    last_warning: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// `upstream`: the configured `dns.upstream_resolver`, or `None` for the system resolver.
    /// Needs no runtime; lookups must run on Tokio.
    pub fn new(upstream: Option<SocketAddr>) -> Result<Self, ResolveError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match upstream {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let config = ResolverConfig::from_name_servers(vec![server]);
                TokioResolver::builder_with_config(config, provider)
            }
            None => match TokioResolver::builder(provider) {
                Ok(builder) => builder,
                Err(e) => {
                    // Same fallback as glibc and Go when resolv.conf is missing or empty.
                    tracing::warn!(error = %e, "cannot read system DNS configuration, using 127.0.0.1:53");
                    let server = NameServerConfig::udp_and_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST));
                    let config = ResolverConfig::from_name_servers(vec![server]);
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                }
            },
        };
        let opts = builder.options_mut();
        if upstream.is_some() {
            opts.timeout = QUERY_TIMEOUT;
        }
        opts.cache_size = CACHE_SIZE;
        opts.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let inner = builder.build().map_err(|e| ResolveError::Lookup {
            host: upstream
                .map(|a| a.to_string())
                .unwrap_or_else(|| "system resolver".into()),
            source: e,
        })?;
        Ok(Self {
            upstream,
            inner,
            last_warning: parking_lot::Mutex::new(None),
        })
    }

    pub fn upstream(&self) -> Option<SocketAddr> {
        self.upstream
    }

    /// All A and AAAA addresses of `host`, A first (an IP literal, bracketed or not, resolves to
    /// itself). A name without a trailing dot goes through the system search list.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        Ok(self.lookup_ip_ttl(host).await?.0)
    }

    /// As [`Resolver::lookup_ip`], with the instant the answer expires (its smallest TTL); an IP
    /// literal never expires.
    pub async fn lookup_ip_ttl(&self, host: &str) -> Result<(Vec<IpAddr>, Instant), ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok((vec![ip], far_future()));
        }
        let lookup = self
            .watched(host, self.inner.lookup_ip(host))
            .await
            .map_err(|e| map_error(host, e))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(ResolveError::NotFound {
                host: host.to_string(),
            });
        }
        Ok((ips, lookup.valid_until()))
    }

    /// The A records of `host`; `Ok(vec![])` when the name exists without A records (NODATA),
    /// [`ResolveError::NotFound`] on NXDOMAIN.
    pub async fn lookup_ipv4(&self, host: &str) -> Result<Vec<Ipv4Addr>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(match ip {
                IpAddr::V4(v4) => vec![v4],
                IpAddr::V6(_) => Vec::new(),
            });
        }
        Ok(self
            .records(host, RecordType::A)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// The AAAA records of `host`, with the same conventions as [`Resolver::lookup_ipv4`].
    pub async fn lookup_ipv6(&self, host: &str) -> Result<Vec<Ipv6Addr>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(match ip {
                IpAddr::V6(v6) => vec![v6],
                IpAddr::V4(_) => Vec::new(),
            });
        }
        Ok(self
            .records(host, RecordType::AAAA)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// Runs a lookup, warning once it has taken [`SLOW_LOOKUP`] (even if the caller then gives
    /// up on it) and when it fails for another reason than "no such name": requests stall or
    /// fail behind the resolver, and nothing else would say why.
    async fn watched<T>(
        &self,
        host: &str,
        lookup: impl std::future::Future<Output = Result<T, NetError>>,
    ) -> Result<T, NetError> {
        let started = std::time::Instant::now();
        tokio::pin!(lookup);
        let result = tokio::select! {
            r = &mut lookup => r,
            () = tokio::time::sleep(SLOW_LOOKUP) => {
                self.warn(host, started.elapsed(), None);
                lookup.await
            }
        };
        if let Err(e) = &result
            && !e.is_nx_domain()
            && !e.is_no_records_found()
        {
            self.warn(host, started.elapsed(), Some(e));
        }
        result
    }

    /// One WARN line, at most every [`WARN_EVERY`].
    fn warn(&self, host: &str, took: Duration, failed: Option<&NetError>) {
        {
            let mut last = self.last_warning.lock();
            if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let resolver = self.upstream.map_or_else(
            || "system resolver (/etc/resolv.conf)".to_string(),
            |a| a.to_string(),
        );
        match failed {
            Some(e) => tracing::warn!(
                host,
                resolver = %resolver,
                took_ms = took.as_millis() as u64,
                error = %e,
                "upstream DNS resolution is failing: requests that need it fail (check dns.upstream_resolver or the system resolver)"
            ),
            None => tracing::warn!(
                host,
                resolver = %resolver,
                took_ms = took.as_millis() as u64,
                "upstream DNS resolution is slow: requests wait for it (check dns.upstream_resolver or the system resolver)"
            ),
        }
    }

    async fn records(&self, host: &str, kind: RecordType) -> Result<Vec<RData>, ResolveError> {
        match self.watched(host, self.inner.lookup(host, kind)).await {
            // Answers may include the CNAME chain; callers keep only the type they asked for.
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(map_error(host, e)),
        }
    }
}

/// An expiry that never comes in practice (a day ahead; `Instant` has no maximum).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn map_error(host: &str, e: NetError) -> ResolveError {
    if e.is_nx_domain() || e.is_no_records_found() {
        ResolveError::NotFound {
            host: host.to_string(),
        }
    } else {
        ResolveError::Lookup {
            host: host.to_string(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals() {
        assert_eq!(
            ip_literal("10.0.0.1"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(ip_literal("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal("::1"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal("[::1"), None);
        assert_eq!(ip_literal("example.com"), None);
    }

    #[test]
    fn builds_outside_a_runtime() {
        assert!(Resolver::new(Some("127.0.0.1:53".parse().unwrap())).is_ok());
        assert!(Resolver::new(None).is_ok());
    }

    #[tokio::test]
    async fn literal_lookups_never_touch_the_network() {
        // Upstream on a port nobody listens on: a network lookup would fail.
        let r = Resolver::new(Some("127.0.0.1:9".parse().unwrap())).unwrap();
        assert_eq!(
            r.lookup_ip("[::1]").await.unwrap(),
            vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(
            r.lookup_ipv4("192.0.2.1").await.unwrap(),
            vec![Ipv4Addr::new(192, 0, 2, 1)]
        );
        assert!(r.lookup_ipv6("192.0.2.1").await.unwrap().is_empty());
    }
}
