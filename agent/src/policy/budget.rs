//! Per-identity budgets (`intercept.policies[i].budget`): requests per minute, request-body
//! bytes sent upstream per hour and new hosts per hour, shared by every connection the policy
//! judges. Checked in the policy stage, before any transform runs or anything is dialled; past a
//! budget the request is refused (429, `reason: budget_exceeded`).
//!
//! Windows slide in 60 slots (1 s for the minute, 1 min for the hour), so memory is bounded
//! whatever the traffic; the host set holds at most `new_hosts_per_hour` names.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::intercept::BudgetConfig;
use crate::metrics::Metrics;

/// Which budget a refused request exceeded (the field name, as in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    RequestsPerMinute,
    BytesOutPerHour,
    NewHostsPerHour,
}

impl BudgetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::RequestsPerMinute => "requests_per_minute",
            BudgetKind::BytesOutPerHour => "bytes_out_per_hour",
            BudgetKind::NewHostsPerHour => "new_hosts_per_hour",
        }
    }

    /// The 429 body.
    pub fn body(self) -> &'static str {
        match self {
            BudgetKind::RequestsPerMinute => {
                "budget exceeded: requests_per_minute of this identity's policy; try again later\n"
            }
            BudgetKind::BytesOutPerHour => {
                "budget exceeded: bytes_out_per_hour of this identity's policy; try again later\n"
            }
            BudgetKind::NewHostsPerHour => {
                "budget exceeded: new_hosts_per_hour of this identity's policy (no new hosts for now)\n"
            }
        }
    }
}

const SLOTS: u64 = 60;

/// A count over a sliding window of [`SLOTS`] slots.
#[derive(Debug)]
struct Window {
    slot: Duration,
    /// (slot number, count) per slot index.
    counts: [(u64, u64); SLOTS as usize],
}

impl Window {
    fn new(span: Duration) -> Self {
        Self {
            slot: span / SLOTS as u32,
            counts: [(0, 0); SLOTS as usize],
        }
    }

    fn slot_of(&self, since_start: Duration) -> u64 {
        (since_start.as_millis() / self.slot.as_millis().max(1)) as u64
    }

    fn total(&self, now: u64) -> u64 {
        self.counts
            .iter()
            .filter(|(n, _)| *n + SLOTS > now)
            .map(|(_, c)| *c)
            .sum()
    }

    fn add(&mut self, now: u64, v: u64) {
        let e = &mut self.counts[(now % SLOTS) as usize];
        if e.0 != now {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(v);
    }
}

#[derive(Debug)]
struct State {
    requests: Window,
    bytes: Window,
    /// Host → when it was first seen in the current hour.
    hosts: HashMap<String, Instant>,
}

/// One policy's budgets and usage.
#[derive(Debug)]
pub struct Budget {
    limits: BudgetConfig,
    /// The audit/metrics name of the policy.
    policy: String,
    start: Instant,
    state: Mutex<State>,
    /// Bytes sent since the last fold into the window (the body counter runs per frame).
    pending_bytes: AtomicU64,
    /// Where usage and refusals are counted (the agent's registry).
    metrics: Arc<Metrics>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Budget {
    pub fn new(limits: BudgetConfig, policy: String, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            policy,
            start: Instant::now(),
            state: Mutex::new(State {
                requests: Window::new(Duration::from_secs(60)),
                bytes: Window::new(HOUR),
                hosts: HashMap::new(),
            }),
            pending_bytes: AtomicU64::new(0),
            metrics,
        }
    }

    /// Admits one request to `host`, counting it, or says which budget it would exceed.
    pub fn admit(&self, host: &str) -> Result<(), BudgetKind> {
        self.admit_at(host, Instant::now())
    }

    fn admit_at(&self, host: &str, now: Instant) -> Result<(), BudgetKind> {
        let since = now.saturating_duration_since(self.start);
        let mut st = self.state.lock();
        let pending = self.pending_bytes.swap(0, Ordering::Relaxed);
        let bslot = st.bytes.slot_of(since);
        st.bytes.add(bslot, pending);
        let rslot = st.requests.slot_of(since);
        let refuse = |kind: BudgetKind| {
            self.metrics.budget_exceeded(&self.policy, kind.as_str());
            Err(kind)
        };
        if let Some(max) = self.limits.requests_per_minute
            && st.requests.total(rslot) >= max
        {
            return refuse(BudgetKind::RequestsPerMinute);
        }
        if let Some(max) = self.limits.bytes_out_per_hour
            && st.bytes.total(bslot) >= max
        {
            return refuse(BudgetKind::BytesOutPerHour);
        }
        let mut new_host = false;
        if let Some(max) = self.limits.new_hosts_per_hour {
            st.hosts
                .retain(|_, first| now.saturating_duration_since(*first) < HOUR);
            if !st.hosts.contains_key(host) {
                if st.hosts.len() as u64 >= max {
                    return refuse(BudgetKind::NewHostsPerHour);
                }
                st.hosts.insert(host.to_string(), now);
                new_host = true;
            }
        }
        st.requests.add(rslot, 1);
        drop(st);
        self.metrics
            .budget_used(&self.policy, BudgetKind::RequestsPerMinute.as_str(), 1);
        if new_host {
            self.metrics
                .budget_used(&self.policy, BudgetKind::NewHostsPerHour.as_str(), 1);
        }
        Ok(())
    }

    /// Request-body bytes sent upstream (called per body frame; no lock on the data path).
    pub fn add_bytes(&self, n: u64) {
        self.pending_bytes.fetch_add(n, Ordering::Relaxed);
        self.metrics
            .budget_used(&self.policy, BudgetKind::BytesOutPerHour.as_str(), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(r: Option<u64>, b: Option<u64>, h: Option<u64>) -> Budget {
        Budget::new(
            BudgetConfig {
                requests_per_minute: r,
                bytes_out_per_hour: b,
                new_hosts_per_hour: h,
            },
            "t".into(),
            Default::default(),
        )
    }

    #[test]
    fn requests_per_minute_slide() {
        let b = budget(Some(2), None, None);
        let t0 = b.start;
        assert_eq!(b.admit_at("a", t0), Ok(()));
        assert_eq!(b.admit_at("a", t0 + Duration::from_secs(30)), Ok(()));
        assert_eq!(
            b.admit_at("a", t0 + Duration::from_secs(31)),
            Err(BudgetKind::RequestsPerMinute)
        );
        // The first request leaves the window after a minute.
        assert_eq!(b.admit_at("a", t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn bytes_and_new_hosts() {
        let b = budget(None, Some(10), Some(1));
        let t0 = b.start;
        assert_eq!(b.admit_at("a", t0), Ok(()));
        assert_eq!(b.admit_at("b", t0), Err(BudgetKind::NewHostsPerHour));
        assert_eq!(b.admit_at("a", t0), Ok(()));
        b.add_bytes(100);
        assert_eq!(b.admit_at("a", t0), Err(BudgetKind::BytesOutPerHour));
        let later = t0 + HOUR + Duration::from_secs(61);
        assert_eq!(b.admit_at("b", later), Ok(()));
    }
}
