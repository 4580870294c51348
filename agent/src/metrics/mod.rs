//! Prometheus metrics (`/metrics` on `metrics.listen`) and the health state behind `/healthz`
//! and `/readyz`.
//!
//! One registry per agent, a [`Metrics`] value the app creates at startup and hands (as an
//! `Arc<Metrics>`) to every part that counts: no process-wide state, so two agents (or two
//! tests) in one process never share counters. The data path records into it through the small
//! methods below (a label lookup and an atomic add, never I/O), the metrics listener encodes it
//! on scrape. Kernel (eBPF) counters are read from their map at scrape time ([`kernel`]). This
//! module depends on nothing else in the crate, so every stage may record into it.

pub mod health;
pub mod kernel;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use health::Health;

use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    /// The `intercept.policies` entry whose pipeline ran; `""` = the top-level pipeline.
    policy: String,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransformLabels {
    transform: String,
    phase: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    qtype: &'static str,
    answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    policy: String,
    budget: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabel {
    hash: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency buckets: 0.5 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The agent's metrics registry: every metric family (see docs/operations.md for the list),
/// the per-label-set handle caches and the kernel counters' source. Created once by the app
/// ([`Metrics::new`]) and shared as an `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<DurationLabels>,
    transforms: Family<TransformLabels, Counter>,
    upstream_errors: Family<KindLabel, Counter>,
    tls_leaf_cache: Family<ResultLabel, Counter>,
    tls_leaf_mints: Counter,
    dns_queries: Family<DnsLabels, Counter>,
    secret_refresh_failures: Family<KindLabel, Counter>,
    audit_dropped: Counter,
    otel_exported: Counter,
    otel_dropped: Family<ReasonLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    config_info: Family<HashLabel, Gauge>,
    budget_used: Family<BudgetLabels, Counter>,
    budget_exceeded: Family<BudgetLabels, Counter>,
    request_handles: Handles<RequestKey, (Counter, Histogram)>,
    transform_handles: Handles<TransformKey, Counter>,
    /// Serialises [`Metrics::set_config_hash`]'s clear-and-set.
    config_swap: parking_lot::Mutex<()>,
    /// Where the kernel collector reads the eBPF counters from.
    kernel: Arc<kernel::SourceSlot>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family declared (and the fixed label sets at 0).
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            transforms: Family::default(),
            upstream_errors: Family::default(),
            tls_leaf_cache: Family::default(),
            tls_leaf_mints: Counter::default(),
            dns_queries: Family::default(),
            secret_refresh_failures: Family::default(),
            audit_dropped: Counter::default(),
            otel_exported: Counter::default(),
            otel_dropped: Family::default(),
            reloads: Family::default(),
            config_info: Family::default(),
            budget_used: Family::default(),
            budget_exceeded: Family::default(),
            request_handles: Handles::new(),
            transform_handles: Handles::new(),
            config_swap: parking_lot::Mutex::new(()),
            kernel: Arc::default(),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        // Counter names get their `_total` suffix from the encoder.
        r.register(
            "iron_agent_requests",
            "Answered requests (one per audit record), by action, policy and protocol",
            self.requests.clone(),
        );
        r.register(
            "iron_agent_request_duration_seconds",
            "Request duration from arrival to the last byte sent, by action",
            self.request_duration.clone(),
        );
        r.register(
            "iron_agent_transform_actions",
            "Transform trace entries, by transform, phase and action",
            self.transforms.clone(),
        );
        r.register(
            "iron_agent_upstream_errors",
            "Requests that failed reaching the upstream, by error kind",
            self.upstream_errors.clone(),
        );
        r.register(
            "iron_agent_tls_leaf_cache",
            "TLS leaf certificate cache lookups, by result (hit, miss)",
            self.tls_leaf_cache.clone(),
        );
        r.register(
            "iron_agent_tls_leaf_mints",
            "TLS leaf certificates minted",
            self.tls_leaf_mints.clone(),
        );
        r.register(
            "iron_agent_dns_queries",
            "DNS questions answered, by query type and answer type",
            self.dns_queries.clone(),
        );
        r.register(
            "iron_agent_secret_refresh_failures",
            "Failed secret fetches (startup and refresh), by source type",
            self.secret_refresh_failures.clone(),
        );
        r.register(
            "iron_agent_audit_dropped",
            "Audit records not written because the log writer fell behind",
            self.audit_dropped.clone(),
        );
        r.register(
            "iron_agent_otel_exported",
            "Audit records accepted by the OTLP collector",
            self.otel_exported.clone(),
        );
        r.register(
            "iron_agent_otel_dropped",
            "Audit records not exported over OTLP, by reason (queue_full, export_failed)",
            self.otel_dropped.clone(),
        );
        r.register(
            "iron_agent_reloads",
            "Configuration reloads, by result (success, failure)",
            self.reloads.clone(),
        );
        r.register(
            "iron_agent_config_info",
            "The configuration in force: 1, labelled with its hash",
            self.config_info.clone(),
        );
        register_budgets(r, &self.budget_used, &self.budget_exceeded);
        r.register_collector(Box::new(kernel::KernelCollector::new(self.kernel.clone())));
        // Fixed label sets start at 0, so the families are on the page (and rates work) before
        // the first event; families labelled by traffic appear with their first sample.
        for reason in ["queue_full", "export_failed"] {
            let _ = self.otel_dropped.get_or_create(&ReasonLabel { reason });
        }
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&ResultLabel { result });
        }
        self
    }
}

/// The `intercept.policies[].budget` families (issue 11 item 14).
fn register_budgets(
    r: &mut Registry,
    used: &Family<BudgetLabels, Counter>,
    exceeded: &Family<BudgetLabels, Counter>,
) {
    r.register(
        "iron_agent_budget_used",
        "Usage counted against intercept.policies[].budget, by policy and budget (requests, request-body bytes, new hosts)",
        used.clone(),
    );
    r.register(
        "iron_agent_budget_exceeded",
        "Requests refused with 429 because a policy's budget was exhausted, by policy and budget",
        exceeded.clone(),
    );
}

/// Handles of label sets already seen, found by comparing borrowed labels: the per-request
/// metrics run once per audit record, and building an owned label set (a `String` per
/// transform name) and SipHashing it cost more than the rest of the record's bookkeeping.
/// Pipelines have a handful of transforms and policies, so a short list scanned under a read
/// lock is enough; past [`HANDLE_CACHE_MAX`] label sets the families are used directly.
struct Handles<K, V>(parking_lot::RwLock<Vec<(K, V)>>);

const HANDLE_CACHE_MAX: usize = 256;

impl<K, V> Handles<K, V> {
    fn new() -> Self {
        Self(parking_lot::RwLock::new(Vec::new()))
    }

    /// Runs `record` on the cached handle for the key `hit` accepts (no clone: a clone of a
    /// metric is an `Arc` count bump), else on `make`'s, cached when there is room.
    fn with(&self, hit: impl Fn(&K) -> bool, make: impl FnOnce() -> (K, V), record: impl Fn(&V)) {
        if let Some((_, v)) = self.0.read().iter().find(|(k, _)| hit(k)) {
            return record(v);
        }
        let mut all = self.0.write();
        if let Some((_, v)) = all.iter().find(|(k, _)| hit(k)) {
            return record(v);
        }
        let (k, v) = make();
        record(&v);
        if all.len() < HANDLE_CACHE_MAX {
            all.push((k, v));
        }
    }
}

type RequestKey = (&'static str, Option<Box<str>>, &'static str);
type TransformKey = (Box<str>, &'static str, &'static str);

impl Metrics {
    /// One answered request: called once per audit record. Allocation-free once its label set has
    /// been seen ([`Handles`]).
    pub fn request(
        &self,
        action: &'static str,
        policy: Option<&str>,
        protocol: &'static str,
        duration_ms: f64,
    ) {
        self.request_handles.with(
            |(a, p, pr)| *a == action && p.as_deref() == policy && *pr == protocol,
            || {
                let m = self;
                let count = m
                    .requests
                    .get_or_create(&RequestLabels {
                        action,
                        policy: policy.unwrap_or_default().to_string(),
                        protocol,
                    })
                    .clone();
                let duration = m
                    .request_duration
                    .get_or_create(&DurationLabels { action })
                    .clone();
                ((action, policy.map(Box::from), protocol), (count, duration))
            },
            |(count, duration)| {
                count.inc();
                duration.observe(duration_ms.max(0.0) / 1000.0);
            },
        );
    }

    /// One transform trace entry (`phase`: `request` or `response`).
    pub fn transform(&self, name: &str, phase: &'static str, action: &'static str) {
        self.transform_handles.with(
            |(n, p, a)| **n == *name && *p == phase && *a == action,
            || {
                let c = self
                    .transforms
                    .get_or_create(&TransformLabels {
                        transform: name.to_string(),
                        phase,
                        action,
                    })
                    .clone();
                ((name.into(), phase, action), c)
            },
            |c| {
                c.inc();
            },
        );
    }

    pub fn upstream_error(&self, kind: &'static str) {
        inc_kind(&self.upstream_errors, kind);
    }

    pub fn tls_leaf_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        inc_result(&self.tls_leaf_cache, result);
    }

    pub fn tls_leaf_minted(&self) {
        self.tls_leaf_mints.inc();
    }

    /// One DNS question; `answer` is `records`, `nodata`, `nxdomain`, `servfail` or `refused`.
    pub fn dns_query(&self, qtype: &'static str, answer: &'static str) {
        self.dns_queries
            .get_or_create(&DnsLabels { qtype, answer })
            .inc();
    }

    pub fn secret_refresh_failed(&self, source_kind: &'static str) {
        inc_kind(&self.secret_refresh_failures, source_kind);
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    pub fn otel_exported(&self, n: u64) {
        self.otel_exported.inc_by(n);
    }

    pub fn otel_dropped(&self, reason: &'static str, n: u64) {
        self.otel_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// Records OTLP drops so far, all reasons (tests, shutdown report).
    pub fn otel_dropped_total(&self) -> u64 {
        ["queue_full", "export_failed"]
            .iter()
            .map(|&reason| {
                self.otel_dropped
                    .get_or_create(&ReasonLabel { reason })
                    .get()
            })
            .sum()
    }

    /// One configuration reload; a successful one also sets the config hash.
    pub fn record_reload(&self, ok: bool, hash: &str) {
        let result = if ok { "success" } else { "failure" };
        inc_result(&self.reloads, result);
        if ok {
            self.set_config_hash(hash);
        }
    }

    /// The hash of the configuration in force (`iron_agent_config_info{hash="..."} 1`).
    pub fn set_config_hash(&self, hash: &str) {
        // Clear and set as one step: a scrape between them would see no config.
        let _one_at_a_time = self.config_swap.lock();
        self.config_info.clear();
        self.config_info
            .get_or_create(&HashLabel {
                hash: hash.to_string(),
            })
            .set(1);
    }

    /// Usage counted against a policy's budget (`budget` is the config field name).
    pub fn budget_used(&self, policy: &str, budget: &'static str, n: u64) {
        self.budget_used
            .get_or_create(&BudgetLabels {
                policy: policy.to_string(),
                budget,
            })
            .inc_by(n);
    }

    /// One request refused because a policy's budget was exhausted.
    pub fn budget_exceeded(&self, policy: &str, budget: &'static str) {
        self.budget_exceeded
            .get_or_create(&BudgetLabels {
                policy: policy.to_string(),
                budget,
            })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector error would only truncate the page.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Registers (or with `None` removes) the reader of the kernel counters.
    pub fn set_kernel_source(&self, source: Option<kernel::KernelSource>) {
        self.kernel.set(source);
    }
}

fn inc_kind(family: &Family<KindLabel, Counter>, kind: &'static str) {
    family.get_or_create(&KindLabel { kind }).inc();
}

fn inc_result(family: &Family<ResultLabel, Counter>, result: &'static str) {
    family.get_or_create(&ResultLabel { result }).inc();
}

#[cfg(test)]
mod tests;
