//! Audit ingest: proxies export their audit records over OTLP/HTTP (`POST /v1/logs`) with the
//! per-proxy ingest token their sync answer carries ([`token`]). Each record is decoded
//! ([`otlp`]), stamped with the proxy's id and tags as the database knows them (never as the
//! sender claims them), kept in a bounded in-memory ring of recent events ([`ring`]) that
//! `GET /api/v1/audit` queries, and optionally forwarded to an OTLP collector ([`forward`])
//! for durable storage. The ring is per process: replicas each hold what they received.

pub mod forward;
pub mod otlp;
pub mod ring;
pub mod token;

use std::sync::Arc;

pub use ring::{AuditEvent, Filter, Ring};

/// Default number of events the ring keeps (`IRON_CONTROL_AUDIT_RING_SIZE`).
pub const DEFAULT_RING_SIZE: usize = 10_000;
/// Default limit of one export request's body, compressed and after gunzip
/// (`IRON_CONTROL_AUDIT_MAX_BODY_BYTES`): 4 MiB.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Settings {
    pub ring_size: usize,
    pub max_body: usize,
    /// OTLP/HTTP logs endpoint receiving a copy of every accepted batch.
    pub forward_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ring_size: DEFAULT_RING_SIZE,
            max_body: DEFAULT_MAX_BODY,
            forward_endpoint: None,
        }
    }
}

/// The ingest side of the server state.
pub struct Ingest {
    pub ring: Ring,
    pub max_body: usize,
    pub forward: Option<forward::Forwarder>,
}

impl Ingest {
    /// Starts the forwarder (a background task) when an endpoint is set; call inside the runtime.
    pub fn new(s: &Settings) -> Result<Arc<Self>, forward::ForwardError> {
        let forward = match &s.forward_endpoint {
            Some(url) => Some(forward::Forwarder::start(url)?),
            None => None,
        };
        Ok(Arc::new(Self {
            ring: Ring::new(s.ring_size),
            max_body: s.max_body,
            forward,
        }))
    }
}
