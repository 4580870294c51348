//! Capped exponential backoff with jitter for control-plane retries, and the ±10 % jitter of
//! the poll interval (so a fleet started together does not poll in lockstep).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// iron-proxy's schedule: 1 s, doubling, at most 30 s, each ±10 %, no give-up time.
pub const INITIAL: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(30);
/// Jitter of both the backoff steps and the poll interval.
pub const JITTER: f64 = 0.10;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt (jittered); doubles the one after, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        jitter(d, JITTER)
    }

    /// After a success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// `d` scaled by a random factor in `[1 - frac, 1 + frac]`.
pub fn jitter(d: Duration, frac: f64) -> Duration {
    let factor = 1.0 + frac * (2.0 * unit_random() - 1.0);
    d.mul_f64(factor.max(0.0))
}

/// A number in `[0, 1)`; spreading retries needs no cryptographic randomness, only a
/// different value per process and call (the std hasher's per-instance random keys).
fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter() {
        let mut b = Backoff::default();
        let expected = [1u64, 2, 4, 8, 16, 30, 30];
        for secs in expected {
            let d = b.next_delay().as_secs_f64();
            let s = secs as f64;
            assert!(d >= s * 0.9 - 1e-9 && d <= s * 1.1 + 1e-9, "{d} vs {s}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1100));
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_varies() {
        let base = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(base, JITTER)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter does not vary");
    }
}
