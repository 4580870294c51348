//! A cached token in front of a [`TokenSource`]: served while fresh, refreshed in the
//! background once it nears expiry, minted in the foreground only when there is no usable
//! token. At most one mint runs at a time; every caller waiting for a token shares it.
//!
//! Mints run in their own task, so a client that disconnects mid-mint neither cancels the
//! mint nor poisons later refreshes (iron-proxy tied refreshes to the first request's
//! context, §12.7).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use parking_lot::Mutex;

use super::{MintError, Token, TokenSource};

/// A mint (all retries of the source included) may take this long.
const MINT_TIMEOUT: Duration = Duration::from_secs(45);
/// After a failed background refresh, the next one waits this long (the old token still works).
const REFRESH_RETRY: Duration = Duration::from_secs(1);

type Inflight = Shared<BoxFuture<'static, Result<Token, MintError>>>;

#[derive(Default)]
struct State {
    token: Option<Token>,
    inflight: Option<Inflight>,
    /// No background refresh before this instant (set after a failed one).
    refresh_not_before: Option<Instant>,
}

pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    state: Mutex<State>,
}

/// Where a token is in its life.
#[derive(Debug, PartialEq, Eq)]
enum Age {
    Fresh,
    /// Still valid; time to mint its successor in the background.
    Refresh,
    /// Too close to expiry (or past it) to hand out.
    Stale,
}

/// Refresh ahead by a third of the lifetime (at most 60 s); stop using a token a tenth of its
/// lifetime (at most 10 s, x/oauth2's margin) before it expires.
fn age(t: &Token, now: Instant) -> Age {
    let Some(exp) = t.expires_at else {
        return Age::Fresh;
    };
    let life = exp.saturating_duration_since(t.issued_at);
    let stale_at = exp - (life / 10).min(Duration::from_secs(10));
    let refresh_at = exp - (life / 3).min(Duration::from_secs(60));
    if now >= stale_at {
        Age::Stale
    } else if now >= refresh_at {
        Age::Refresh
    } else {
        Age::Fresh
    }
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            state: Mutex::new(State::default()),
        })
    }

    /// A usable token: the cached one, or the result of the (shared) mint in progress.
    pub async fn token(self: &Arc<Self>) -> Result<Token, MintError> {
        let wait = {
            let mut st = self.state.lock();
            let now = Instant::now();
            let cached = st.token.as_ref().map(|t| (age(t, now), t.clone()));
            match cached {
                Some((Age::Fresh, t)) => return Ok(t),
                Some((Age::Refresh, t)) => {
                    let may_refresh = st.refresh_not_before.is_none_or(|nb| now >= nb);
                    if st.inflight.is_none() && may_refresh {
                        st.inflight = Some(self.start());
                    }
                    return Ok(t);
                }
                Some((Age::Stale, _)) | None => {}
            }
            match &st.inflight {
                Some(f) => f.clone(),
                None => {
                    let f = self.start();
                    st.inflight = Some(f.clone());
                    f
                }
            }
        };
        wait.await
    }

    /// Spawns one mint; it stores its own result, whoever is still waiting.
    fn start(self: &Arc<Self>) -> Inflight {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let r = match tokio::time::timeout(MINT_TIMEOUT, me.source.mint()).await {
                Ok(r) => r,
                Err(_) => Err(MintError::Invalid(format!(
                    "minting took longer than {}s",
                    MINT_TIMEOUT.as_secs()
                ))),
            };
            let mut st = me.state.lock();
            st.inflight = None;
            match &r {
                Ok(t) => {
                    st.token = Some(t.clone());
                    st.refresh_not_before = None;
                }
                Err(_) => st.refresh_not_before = Some(Instant::now() + REFRESH_RETRY),
            }
            r
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(MintError::Invalid(format!("mint task failed: {e}"))))
        }
        .boxed()
        .shared()
    }
}

/// The [`TokenCache`] for the credentials currently configured, rebuilt when they change (a
/// `ttl` re-read after rotation): the new source starts clean, dropping any token or rotated
/// refresh token of the old one. Credentials are compared by a keyed hash, never stored here.
#[derive(Default)]
pub struct PerCredentials {
    hasher: RandomState,
    current: Mutex<Option<(u64, Arc<TokenCache>)>>,
}

impl PerCredentials {
    /// A hasher for the credentials' fingerprint (keyed per instance).
    pub fn hasher(&self) -> std::hash::DefaultHasher {
        self.hasher.build_hasher()
    }

    /// The cache for fingerprint `fp`; `build` makes the source when there is none for it,
    /// told whether it replaces one built from other credentials.
    pub fn get(
        &self,
        fp: u64,
        build: impl FnOnce(bool) -> Result<Arc<dyn TokenSource>, MintError>,
    ) -> Result<Arc<TokenCache>, MintError> {
        let mut cur = self.current.lock();
        if let Some((old, cache)) = cur.as_ref()
            && *old == fp
        {
            return Ok(cache.clone());
        }
        let cache = TokenCache::new(build(cur.is_some())?);
        *cur = Some((fp, cache.clone()));
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::secrets::SecretValue;

    struct Counting {
        n: AtomicUsize,
        life: Duration,
        delay: Duration,
    }

    #[async_trait]
    impl TokenSource for Counting {
        async fn mint(&self) -> Result<Token, MintError> {
            tokio::time::sleep(self.delay).await;
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Token::new(
                SecretValue::new(format!("t{n}")),
                Some(self.life),
            ))
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_mint_and_cache_it() {
        let src = Arc::new(Counting {
            n: AtomicUsize::new(0),
            life: Duration::from_secs(3600),
            delay: Duration::from_millis(50),
        });
        let cache = TokenCache::new(src.clone());
        let calls = (0..50).map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.value.expose().to_string()) })
        });
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.unwrap().unwrap(), "t1");
        }
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        assert_eq!(src.n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refreshes_ahead_in_the_background() {
        let src = Arc::new(Counting {
            n: AtomicUsize::new(0),
            life: Duration::from_millis(900),
            delay: Duration::ZERO,
        });
        let cache = TokenCache::new(src.clone());
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        // Past the refresh point (600 ms), before the stale point (810 ms): old token served,
        // successor minted in the background.
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(src.n.load(Ordering::SeqCst), 2);
        assert_eq!(cache.token().await.unwrap().value.expose(), "t2");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cancel_the_mint() {
        let src = Arc::new(Counting {
            n: AtomicUsize::new(0),
            life: Duration::from_secs(3600),
            delay: Duration::from_millis(100),
        });
        let cache = TokenCache::new(src.clone());
        let c = cache.clone();
        let caller = tokio::spawn(async move { c.token().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        caller.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(src.n.load(Ordering::SeqCst), 1);
        // The mint finished and was cached: the next caller needs no second one.
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        assert_eq!(src.n.load(Ordering::SeqCst), 1);
    }

    struct Failing(AtomicUsize);

    #[async_trait]
    impl TokenSource for Failing {
        async fn mint(&self) -> Result<Token, MintError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(MintError::Invalid("down".into()))
        }
    }

    #[tokio::test]
    async fn a_failed_mint_is_shared_then_retried() {
        let src = Arc::new(Failing(AtomicUsize::new(0)));
        let cache = TokenCache::new(src.clone());
        let calls = (0..10).map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.token().await.is_err() })
        });
        for r in futures_util::future::join_all(calls).await {
            assert!(r.unwrap());
        }
        assert_eq!(src.0.load(Ordering::SeqCst), 1);
        assert!(cache.token().await.is_err());
        assert_eq!(src.0.load(Ordering::SeqCst), 2, "failures are not cached");
    }

    #[test]
    fn ages() {
        let now = Instant::now();
        let t = Token {
            value: SecretValue::new("x"),
            issued_at: now,
            expires_at: Some(now + Duration::from_secs(3600)),
            principal: None,
        };
        assert_eq!(age(&t, now), Age::Fresh);
        assert_eq!(age(&t, now + Duration::from_secs(3545)), Age::Refresh);
        assert_eq!(age(&t, now + Duration::from_secs(3591)), Age::Stale);
    }
}
