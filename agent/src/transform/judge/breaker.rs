//! The consecutive-failure circuit breaker of one judge instance: `consecutive_failures`
//! failures in a row open it for `cooldown`; then exactly one probe call is admitted, whose
//! success closes it and whose failure reopens it with a fresh cooldown.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Permission to make one call; report its result with [`Ticket::success`] or
/// [`Ticket::failure`]. A ticket dropped unresolved (the client went away mid-call) frees a
/// half-open probe slot, so the breaker cannot stay open forever.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    resolved: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `None` while open (or while the half-open probe is in flight).
    pub fn admit(&self) -> Option<Ticket<'_>> {
        let mut s = self.lock();
        let probe = match s.open_until {
            None => false,
            Some(until) if Instant::now() < until || s.probing => return None,
            Some(_) => {
                s.probing = true;
                true
            }
        };
        Some(Ticket {
            breaker: self,
            probe,
            resolved: false,
        })
    }
}

impl Ticket<'_> {
    /// Whether this call is the half-open probe.
    #[cfg(test)]
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    pub fn success(mut self) {
        self.resolved = true;
        let mut s = self.breaker.lock();
        *s = State::default();
    }

    pub fn failure(mut self) {
        self.resolved = true;
        let b = self.breaker;
        let mut s = b.lock();
        if self.probe {
            s.probing = false;
            s.open_until = Some(Instant::now() + b.cooldown);
            return;
        }
        s.failures = s.failures.saturating_add(1);
        if s.failures >= b.threshold && s.open_until.is_none() {
            s.failures = 0;
            s.open_until = Some(Instant::now() + b.cooldown);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.resolved {
            self.breaker.lock().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_admits_one_probe() {
        let b = Breaker::new(2, Duration::from_millis(50));
        b.admit().unwrap().failure();
        // A success in between resets the count.
        b.admit().unwrap().success();
        b.admit().unwrap().failure();
        assert!(!b.admit().unwrap().is_probe());
        b.admit().unwrap().failure();
        assert!(b.admit().is_none(), "open after two failures in a row");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit().unwrap();
        assert!(probe.is_probe());
        assert!(b.admit().is_none(), "one probe at a time");
        probe.failure();
        assert!(b.admit().is_none(), "reopened with a fresh cooldown");
        std::thread::sleep(Duration::from_millis(60));
        b.admit().unwrap().success();
        let t = b.admit().unwrap();
        assert!(!t.is_probe(), "closed");
    }

    #[test]
    fn abandoned_probe_frees_the_slot() {
        let b = Breaker::new(1, Duration::from_millis(10));
        b.admit().unwrap().failure();
        std::thread::sleep(Duration::from_millis(20));
        drop(b.admit().unwrap());
        assert!(b.admit().unwrap().is_probe());
    }
}
