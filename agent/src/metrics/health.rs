//! Liveness and readiness. `/healthz` answers while the process serves at all; `/readyz` only
//! once every listener is bound and serving and the pipeline is built, and no longer once a
//! shutdown has begun (so a load balancer stops sending before the drain ends).

use std::sync::atomic::{AtomicBool, Ordering};

/// What readiness waits for. Cheap to share: the metrics listener holds it behind an `Arc`.
#[derive(Debug, Default)]
pub struct Health {
    pipeline: AtomicBool,
    listeners: AtomicBool,
    /// Managed mode: the first sync was applied. Standalone runs mark it at start.
    synced: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Standalone mode: nothing to sync.
    pub fn standalone() -> Self {
        let h = Self::default();
        h.synced.store(true, Ordering::Relaxed);
        h
    }

    pub fn pipeline_built(&self) {
        self.pipeline.store(true, Ordering::Relaxed);
    }

    pub fn listeners_serving(&self) {
        self.listeners.store(true, Ordering::Relaxed);
    }

    pub fn synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready, else what is missing (`pipeline`, `listeners`, `sync`, `shutting down`).
    pub fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        let missing: Vec<&str> = [
            (&self.pipeline, "pipeline"),
            (&self.listeners, "listeners"),
            (&self.synced, "sync"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Relaxed))
        .map(|(_, name)| name)
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("waiting for: {}", missing.join(", ")))
        }
    }
}
