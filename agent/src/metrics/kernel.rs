//! The eBPF programs' counters, read from their map at scrape time (no polling): the agent
//! registers a source on its [`super::Metrics`] once the programs are attached
//! ([`super::Metrics::set_kernel_source`]); without one nothing is exported.

use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// Which family a kernel counter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// A connection or datagram redirected to a listener; label = the listener.
    Redirect,
    /// A connection, datagram, socket or operation (hardening) denied; label = why.
    Denial,
    /// Bookkeeping events (original destinations restored or recorded).
    Event,
}

/// One counter's current value (summed over CPUs).
#[derive(Clone, Debug)]
pub struct KernelCounter {
    pub family: KernelFamily,
    pub label: Arc<str>,
    pub value: u64,
}

/// Reads the counters; an error leaves the kernel families out of that scrape.
pub type KernelSource = Arc<dyn Fn() -> Option<Vec<KernelCounter>> + Send + Sync>;

/// The registered source, shared by the registry's collector and [`super::Metrics`].
#[derive(Default)]
pub(super) struct SourceSlot(RwLock<Option<KernelSource>>);

impl SourceSlot {
    pub(super) fn set(&self, source: Option<KernelSource>) {
        *self.0.write() = source;
    }
}

impl std::fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.read().is_some();
        f.debug_struct("SourceSlot").field("set", &set).finish()
    }
}

const FAMILIES: [(KernelFamily, &str, &str, &str); 3] = [
    (
        KernelFamily::Redirect,
        "iron_agent_ebpf_redirects",
        "Connections and DNS datagrams the eBPF programs redirected, by target listener",
        "target",
    ),
    (
        KernelFamily::Denial,
        "iron_agent_ebpf_denials",
        "Connections, datagrams, sockets and operations the eBPF programs (interception and hardening) denied, by reason",
        "reason",
    ),
    (
        KernelFamily::Event,
        "iron_agent_ebpf_events",
        "Other eBPF program events (addresses restored, tuples recorded), by event",
        "event",
    ),
];

#[derive(Debug)]
pub(super) struct KernelCollector(Arc<SourceSlot>);

impl KernelCollector {
    pub(super) fn new(slot: Arc<SourceSlot>) -> Self {
        Self(slot)
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.0.read().clone() else {
            return Ok(());
        };
        let Some(values) = source() else {
            return Ok(());
        };
        for (family, name, help, key) in FAMILIES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in values.iter().filter(|c| c.family == family) {
                let labels = [(key, &*c.label)];
                ConstCounter::new(c.value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
