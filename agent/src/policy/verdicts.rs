//! The destination check's memory: which (name, address) pairs the resolver confirmed, kept
//! until the DNS answer's TTL runs out, so a redirected connection to a name seen before does not
//! wait for a lookup (issue 13 item 4).
//!
//! Only confirmations are kept: a mismatch is always re-checked. A pair is never trusted longer
//! than the answer that confirmed it, so the cache says nothing the resolver's own cache would not.
//! It lives in a [`super::Policy`], which a reload rebuilds: a reload starts empty. The deny-CIDR
//! check is not affected: it runs on the address actually dialled, in `upstream`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

/// (name, address) pairs kept at most; beyond this, expired pairs are dropped, then arbitrary
/// ones (a miss only costs a lookup).
pub const MAX_VERDICTS: usize = 4096;

/// Confirmed (name, address) pairs with their expiry.
#[derive(Debug)]
pub struct VerdictCache {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Name → (address, valid until). A name has few addresses: a short list beats a second map.
    by_name: HashMap<Box<str>, Vec<(IpAddr, Instant)>>,
    len: usize,
}

impl Default for VerdictCache {
    fn default() -> Self {
        Self::with_capacity(MAX_VERDICTS)
    }
}

impl VerdictCache {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether `name` was confirmed to live at `addr` by an answer still valid at `now`.
    pub fn confirmed(&self, name: &str, addr: IpAddr, now: Instant) -> bool {
        let inner = self.inner.lock();
        inner
            .by_name
            .get(name)
            .is_some_and(|v| v.iter().any(|&(a, until)| a == addr && now < until))
    }

    /// Remembers that `name` lives at `addr` until `until` (the answer's expiry). An answer
    /// already expired is not kept.
    pub fn confirm(&self, name: &str, addr: IpAddr, until: Instant, now: Instant) {
        if until <= now || self.cap == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some(v) = inner.by_name.get_mut(name)
            && let Some(slot) = v.iter_mut().find(|(a, _)| *a == addr)
        {
            slot.1 = until;
            return;
        }
        if inner.len >= self.cap {
            inner.evict(now, self.cap);
        }
        inner
            .by_name
            .entry(name.into())
            .or_default()
            .push((addr, until));
        inner.len += 1;
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.by_name.clear();
        inner.len = 0;
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Drops expired pairs; if that frees nothing, drops whole names until below `cap`.
    fn evict(&mut self, now: Instant, cap: usize) {
        let mut len = 0;
        self.by_name.retain(|_, v| {
            v.retain(|&(_, until)| now < until);
            len += v.len();
            !v.is_empty()
        });
        self.len = len;
        while self.len >= cap {
            let Some(name) = self.by_name.keys().next().cloned() else {
                break;
            };
            if let Some(v) = self.by_name.remove(&name) {
                self.len -= v.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn confirmed_until_the_answer_expires() {
        let c = VerdictCache::default();
        let now = Instant::now();
        let until = now + Duration::from_secs(300);
        assert!(!c.confirmed("a.test", ip("192.0.2.1"), now));
        c.confirm("a.test", ip("192.0.2.1"), until, now);
        assert!(c.confirmed("a.test", ip("192.0.2.1"), now));
        assert!(c.confirmed("a.test", ip("192.0.2.1"), until - Duration::from_millis(1)));
        // Expired at the TTL, and never for another address or name.
        assert!(!c.confirmed("a.test", ip("192.0.2.1"), until));
        assert!(!c.confirmed("a.test", ip("192.0.2.2"), now));
        assert!(!c.confirmed("b.test", ip("192.0.2.1"), now));
    }

    #[test]
    fn an_expired_answer_is_not_kept() {
        let c = VerdictCache::default();
        let now = Instant::now();
        c.confirm("a.test", ip("192.0.2.1"), now, now);
        assert!(c.is_empty());
        assert!(!c.confirmed("a.test", ip("192.0.2.1"), now));
    }

    #[test]
    fn a_newer_answer_moves_the_expiry() {
        let c = VerdictCache::default();
        let now = Instant::now();
        c.confirm("a.test", ip("192.0.2.1"), now + Duration::from_secs(1), now);
        c.confirm(
            "a.test",
            ip("192.0.2.1"),
            now + Duration::from_secs(60),
            now,
        );
        assert_eq!(c.len(), 1);
        assert!(c.confirmed("a.test", ip("192.0.2.1"), now + Duration::from_secs(30)));
    }

    #[test]
    fn bounded_expired_pairs_go_first() {
        let c = VerdictCache::with_capacity(4);
        let now = Instant::now();
        let short = now + Duration::from_secs(1);
        let long = now + Duration::from_secs(600);
        c.confirm("old.test", ip("192.0.2.1"), short, now);
        c.confirm("old.test", ip("192.0.2.2"), short, now);
        c.confirm("keep.test", ip("192.0.2.3"), long, now);
        c.confirm("keep.test", ip("192.0.2.4"), long, now);
        assert_eq!(c.len(), 4);
        let later = now + Duration::from_secs(2);
        c.confirm("new.test", ip("192.0.2.5"), long, later);
        assert_eq!(c.len(), 3);
        assert!(c.confirmed("keep.test", ip("192.0.2.4"), later));
        assert!(c.confirmed("new.test", ip("192.0.2.5"), later));
    }

    #[test]
    fn bounded_when_nothing_has_expired() {
        let c = VerdictCache::with_capacity(8);
        let now = Instant::now();
        let until = now + Duration::from_secs(600);
        for i in 0..100u8 {
            c.confirm(
                &format!("n{i}.test"),
                IpAddr::from([192, 0, 2, i]),
                until,
                now,
            );
            assert!(c.len() <= 8, "len {} after {} inserts", c.len(), i + 1);
        }
        // The newest pair is always kept.
        assert!(c.confirmed("n99.test", ip("192.0.2.99"), now));
    }

    #[test]
    fn clear_forgets_everything() {
        let c = VerdictCache::default();
        let now = Instant::now();
        c.confirm(
            "a.test",
            ip("192.0.2.1"),
            now + Duration::from_secs(60),
            now,
        );
        c.clear();
        assert!(c.is_empty());
        assert!(!c.confirmed("a.test", ip("192.0.2.1"), now));
    }
}
