//! Policy: the connection-level decision of one identity profile, made before anything is
//! dialled and before any request on the connection is visible.
//!
//! [`Policy`] is built from a profile's `allowlist` entries (iron-proxy semantics: without an
//! allowlist every destination is allowed; with several, each must admit). It decides tunnel
//! setup (CONNECT/SOCKS5), sni-only connections, which names the DNS server answers in eBPF
//! mode, and whether a redirected connection's real destination is where its host name lives.
//! Request-level rules (methods, paths) stay with the `allowlist` transform, which judges every
//! request with the same compiled rules ([`AllowRules`]).
//!
//! [`rules`] and [`hostmatch`] are the matching primitives every transform scoped by `rules`
//! uses.

pub mod allow;
pub mod budget;
pub mod hostmatch;
pub mod rules;
pub mod verdicts;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Map;

pub use allow::{ALLOWLIST, Admission, AllowRules, LEARN_KEY, RuleRef, WOULD_DENY};
pub use hostmatch::{match_glob, match_path, normalize_host};
pub use rules::{MatchInput, Rule, RuleSet, unmap};

use crate::audit::{Trace, TraceAction};
use crate::config::{TransformEntry, TransformSpec};
use crate::identify::HostName;
use crate::resolve::Resolver;
use verdicts::VerdictCache;

/// What a connection-level decision can see: where the connection goes, nothing more.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionCheck<'a> {
    /// Normalised host (or IP literal) without port.
    pub host: &'a HostName,
    pub dest_ip: Option<IpAddr>,
    /// The client's address, for rules limited by `source_ip`.
    pub client_ip: Option<IpAddr>,
    /// Requests will follow and be judged one by one (tunnel setup, decision 9): rules
    /// restricted by method or path count by destination only. False when no request will
    /// ever be visible (sni-only): such rules cannot match, as in iron-proxy.
    pub requests_follow: bool,
}

/// A connection-level decision and the trace of every allowlist that took part (in order,
/// up to the first that refused), for the audit record's `request_transforms`.
#[derive(Debug, Clone)]
pub struct ConnDecision {
    pub allowed: bool,
    pub traces: Vec<Trace>,
}

/// The connection-level policy of one identity profile.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// One per `allowlist` entry, in pipeline order.
    gates: Vec<AllowRules>,
    /// The destination check's confirmed (name, address) pairs; a reload builds a new policy
    /// and so starts empty.
    verdicts: Arc<VerdictCache>,
}

impl Policy {
    /// The policy of a `transforms:` list: its `allowlist` entries.
    pub fn from_transforms(entries: &[TransformEntry]) -> Self {
        let gates = entries
            .iter()
            .filter_map(|e| match &e.spec {
                TransformSpec::Allowlist(cfg) => Some(AllowRules::new(cfg)),
                _ => None,
            })
            .collect();
        Self {
            gates,
            verdicts: Arc::default(),
        }
    }

    /// No allowlist: default-deny is off and every destination is allowed.
    pub fn allows_everything(&self) -> bool {
        self.gates.is_empty()
    }

    /// Judges a connection by its destination, stopping at the first allowlist that refuses.
    pub fn judge_connection(&self, check: &ConnectionCheck<'_>) -> ConnDecision {
        let input = MatchInput {
            host: check.host,
            method: "",
            path: "",
            dest_ip: check.dest_ip,
            client_ip: check.client_ip,
        };
        let mut traces = Vec::with_capacity(self.gates.len());
        for gate in &self.gates {
            let started = Instant::now();
            let admission = gate.judge_connection(&input, check.requests_follow);
            traces.push(gate_trace(admission, started));
            if !admission.admits() {
                return ConnDecision {
                    allowed: false,
                    traces,
                };
            }
        }
        ConnDecision {
            allowed: true,
            traces,
        }
    }

    /// Could a request to `host` pass every allowlist (DNS in eBPF mode answers only names
    /// some profile may allow)?
    pub fn may_allow_host(&self, host: &str) -> bool {
        self.gates.iter().all(|g| g.may_admit_host(host))
    }

    /// Does a CIDR rule of some allowlist name `ip` (a hard-coded destination the operator
    /// allowed explicitly)?
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.gates.iter().any(|g| g.allows_ip(ip))
    }

    /// A redirected connection's real destination must be where the named host lives: an
    /// address the agent's resolver returns for it, or one a CIDR rule allows. Otherwise the
    /// workload is using an allowed name as cover for a hard-coded IP (domain fronting,
    /// pinned addresses).
    pub async fn destination_matches(
        &self,
        resolver: &Resolver,
        host: &HostName,
        dest: IpAddr,
    ) -> bool {
        let dest = unmap(dest);
        if let Some(ip) = host.ip() {
            return unmap(ip) == dest;
        }
        if self.allows_ip(dest) {
            return true;
        }
        // A pair confirmed by an answer still within its TTL needs no second lookup: the
        // resolver would give the same answer from its cache (or, for a name with an A but no
        // AAAA record, ask upstream again for the AAAA each time).
        if self.verdicts.confirmed(host, dest, Instant::now()) {
            return true;
        }
        match resolver.lookup_ip_ttl(host).await {
            Ok((ips, until)) => {
                let found = ips.into_iter().any(|ip| unmap(ip) == dest);
                if found {
                    self.verdicts.confirm(host, dest, until, Instant::now());
                }
                found
            }
            Err(_) => false,
        }
    }

    /// The destination check's cache (tests, diagnostics).
    pub fn verdicts(&self) -> &VerdictCache {
        &self.verdicts
    }
}

/// One allowlist's trace entry for a connection-level decision.
fn gate_trace(admission: Admission, started: Instant) -> Trace {
    let mut annotations = Map::new();
    if let Some((k, v)) = admission.annotation() {
        annotations.insert(k.into(), v.into());
    }
    Trace {
        name: ALLOWLIST.to_string(),
        action: if admission.admits() {
            TraceAction::Allow
        } else {
            TraceAction::Reject
        },
        duration_ms: started.elapsed().as_micros() as f64 / 1000.0,
        error: None,
        annotations,
    }
}

#[cfg(test)]
mod tests;
