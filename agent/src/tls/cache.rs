//! The leaf cache: one ready server config per server name, LRU-bounded, single-flight.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::sync::OnceCell;

use super::leaf::{ConfigTemplate, LeafName, mint_config};
use super::{ALPN_H2, ALPN_HTTP11, CertAuthority, TlsError};
use crate::metrics::Metrics;

/// Entries are dropped this long before their leaf expires (capped at a quarter of the
/// validity), so a cached leaf is never served at the edge of its lifetime.
const EXPIRY_MARGIN: Duration = Duration::from_secs(3600);

type Flight = Arc<OnceCell<Arc<ServerConfig>>>;

struct Entry {
    config: Arc<ServerConfig>,
    minted: Instant,
}

struct State {
    lru: LruCache<String, Entry>,
    /// Mints in progress, so concurrent first requests for one name share a single mint.
    in_flight: HashMap<String, Flight>,
}

impl State {
    /// Removes `key`'s flight if it is still `flight`; true if it was.
    fn take_flight(&mut self, key: &str, flight: &Flight) -> bool {
        let ours = self
            .in_flight
            .get(key)
            .is_some_and(|f| Arc::ptr_eq(f, flight));
        if ours {
            self.in_flight.remove(key);
        }
        ours
    }
}

/// Retires a flight that every waiter abandoned (cancelled or failed), so names nobody
/// finished minting do not accumulate in `in_flight`.
struct FlightGuard<'a> {
    cache: &'a LeafCache,
    key: String,
    flight: Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.cache.state.lock();
        // New waiters clone the flight only under this lock, so a count of 2 (the map's and
        // ours) means nobody else can still complete it.
        if Arc::strong_count(&self.flight) == 2 {
            state.take_flight(&self.key, &self.flight);
        }
    }
}

struct Shared {
    ca: CertAuthority,
    template: ConfigTemplate,
    validity: Duration,
}

/// Leaf certificates by server name, each wrapped in a ready rustls server config.
pub struct LeafCache {
    shared: Arc<Shared>,
    state: Mutex<State>,
    ttl: Duration,
    mints: AtomicU64,
    /// Where lookups and mints are counted (the agent's registry).
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.shared.ca)
            .field("validity", &self.shared.validity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// A cache of at most `capacity` (at least 1) leaves, each valid for `validity`, counting
    /// into `metrics`. ALPN offers `h2` then `http/1.1`; see [`LeafCache::with_alpn`].
    pub fn new(
        ca: CertAuthority,
        capacity: usize,
        validity: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            shared: Arc::new(Shared {
                ca,
                template: ConfigTemplate::new(
                    super::provider(),
                    vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
                ),
                validity,
            }),
            state: Mutex::new(State {
                lru: LruCache::new(capacity),
                in_flight: HashMap::new(),
            }),
            ttl: entry_ttl(validity),
            mints: AtomicU64::new(0),
            metrics,
        }
    }

    /// Replaces the ALPN protocols offered to clients (e.g. `[h2, http/1.1]`), most preferred
    /// first. Call before the first [`LeafCache::server_config`]; cached configs keep theirs.
    pub fn with_alpn(mut self, protocols: Vec<Vec<u8>>) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.template.alpn = protocols,
            // Only if the blocking task of a cancelled mint still holds `shared`; this is a
            // construction-time setter, before any request.
            None => tracing::warn!("LeafCache::with_alpn ignored: mint in progress"),
        }
        self
    }

    /// The server config presenting a leaf for `name` (a DNS name or an IP literal).
    ///
    /// The name is matched case-insensitively and without a trailing dot. A miss mints a leaf;
    /// concurrent misses for one name wait for the same mint.
    pub async fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let name = LeafName::parse(name)?;
        let key = name.key();

        let flight = {
            let mut state = self.state.lock();
            match state.lru.get(&key) {
                Some(entry) if entry.minted.elapsed() < self.ttl => {
                    self.metrics.tls_leaf_cache(true);
                    return Ok(Arc::clone(&entry.config));
                }
                Some(_) => {
                    state.lru.pop(&key);
                }
                None => {}
            }
            Arc::clone(state.in_flight.entry(key.clone()).or_default())
        };
        self.metrics.tls_leaf_cache(false);
        let guard = FlightGuard {
            cache: self,
            key,
            flight,
        };

        // If the task running the mint is cancelled, OnceCell lets the next waiter mint
        // instead; a failed mint is likewise retried rather than cached.
        let result = guard
            .flight
            .get_or_try_init(|| self.mint(name))
            .await
            .map(Arc::clone);

        if let Ok(config) = &result {
            let mut state = self.state.lock();
            // The first waiter to get here publishes the config and retires the flight.
            if state.take_flight(&guard.key, &guard.flight) {
                state.lru.put(
                    guard.key.clone(),
                    Entry {
                        config: Arc::clone(config),
                        minted: Instant::now(),
                    },
                );
            }
        }
        result
    }

    async fn mint(&self, name: LeafName) -> Result<Arc<ServerConfig>, TlsError> {
        self.mints.fetch_add(1, Ordering::Relaxed);
        self.metrics.tls_leaf_minted();
        let shared = Arc::clone(&self.shared);
        // An RSA-4096 CA takes milliseconds to sign; keep that off the async workers.
        tokio::task::spawn_blocking(move || {
            mint_config(&shared.ca, &shared.template, &name, shared.validity)
        })
        .await
        .map_err(TlsError::MintTask)?
    }

    /// How many leaves this cache has minted (cache misses that reached the signer).
    pub fn mint_count(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Cached entries, including any that have expired but not yet been dropped.
    pub fn len(&self) -> usize {
        self.state.lock().lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CA leaves are signed with.
    pub fn authority(&self) -> &CertAuthority {
        &self.shared.ca
    }
}

/// How long a cache entry lives: the leaf's validity minus a safety margin.
fn entry_ttl(validity: Duration) -> Duration {
    validity.saturating_sub(EXPIRY_MARGIN.min(validity / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_shorter_than_validity() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(entry_ttl(h(72)), h(71));
        assert_eq!(entry_ttl(Duration::from_secs(4)), Duration::from_secs(3));
        assert_eq!(entry_ttl(Duration::ZERO), Duration::ZERO);
    }
}
