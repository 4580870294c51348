//! Outcomes: how a request or connection ended, and what that means for the client's answer
//! and the audit record. This is the one place where the status code and the audit fields
//! `action`, `reason`, `rejected_by`, `stubbed_by` and `error` are decided; every path that
//! answers (HTTP handler, WebSocket relay, tunnel setup, sni-only passthrough) describes what
//! happened as an [`Outcome`] and lets [`answer`] (or [`finish`]) turn it into both.
//!
//! The table (also in docs/architecture.md):
//!
//! | outcome | status | action | audit fields |
//! |---|---|---|---|
//! | forwarded / opened / relayed | upstream's (200 for a tunnel or splice) | allow | |
//! | refused by the agent ([`Refusal`]) | 400, 403, 405, 429 (budget), 431 (request head) or 503 (connection limit) | reject | `reason`, `rejected_by: proxy` |
//! | managed mode before the first sync | 503 | reject | `reason: not_ready`, `rejected_by: proxy` |
//! | denied by the connection policy | 403 | reject | `rejected_by: allowlist` |
//! | transform reject | transform's, default 403 | reject | `rejected_by` |
//! | transform stub | transform's | stub | `stubbed_by` (request phase only) |
//! | body over a buffer limit | 413 | reject | `reason: body_too_large`, `rejected_by` |
//! | transform error | 502 | error | `error: transform <name> <phase>: ...` |
//! | agent or upstream failure ([`Failure`]) | 502 (no SNI: 400) | error | `error` |
//! | client went away | 200 (WebSocket: upstream's) | client_cancel | |
//!
//! Every upstream error kind ([`crate::upstream::UpstreamErrorKind`]: denied CIDR, DNS,
//! connection refused, timeout, TLS, proxy, protocol) is a 502, as iron-proxy answers them
//! all (behaviour doc §6.3, §6.4: even a response-header timeout is a 502, not a 504).

pub mod respond;

use http::StatusCode;

use crate::audit::{Action, AuditRecord, PendingAudit};
use crate::identify;
use crate::message::ProxyResponse;
use crate::message::header_case::CasingError;
use crate::telemetry::error_chain;
use crate::transform::pipeline::PhaseOutcome;
use crate::transform::{Phase, TransformError};
use crate::upstream::UpstreamError;

/// `rejected_by` for refusals the agent makes itself.
const PROXY: &str = "proxy";

/// How one request or connection ended.
pub enum Outcome {
    /// The upstream's response (after the response transforms) goes back to the client.
    Forwarded(ProxyResponse),
    /// A connection-level allow: a tunnel set up, or an sni-only splice that ended.
    Opened,
    /// A WebSocket relay that ended normally; `status` is what the client got (101 or 200).
    Relayed { status: u16 },
    /// The agent refused on its own, before any transform ran.
    Refused(Refusal),
    /// The connection-level policy refused (tunnel setup, sni-only); `by` is the allowlist.
    Denied { by: &'static str },
    /// A transform rejected; `None` is the default 403.
    Rejected {
        by: String,
        phase: Phase,
        response: Option<ProxyResponse>,
    },
    /// MCP policy denied a JSON-RPC request: the error envelope (200), `action: reject`
    /// with no `rejected_by` (iron-proxy's shape); the `mcp` group says why.
    McpDenied(ProxyResponse),
    /// A transform answered itself.
    Stubbed {
        by: String,
        phase: Phase,
        response: ProxyResponse,
    },
    /// A transform failed (a body over the buffer limit is a refusal, not a failure).
    TransformFailed {
        by: String,
        phase: Phase,
        error: TransformError,
    },
    /// The agent or the upstream failed.
    Failed(Failure),
    /// The client went away; `status` is what it had been sent, if anything (else 200).
    ClientCancel { status: u16 },
}

/// Refusals the agent makes itself (`rejected_by: proxy`), each with its audit `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Missing Host, dot segments, SNI ≠ Host (400 with iron-proxy's body).
    Identify(identify::Refusal),
    /// `CONNECT` sent to the HTTP or HTTPS listener (405).
    ConnectNotSupportedHere,
    /// A redirected connection's real destination is not where its host name lives (403).
    DestinationMismatch,
    /// A tunnel handshake refused before any destination was judged; the client already got
    /// the protocol's refusal, `status` is the HTTP status sent (or 403 for SOCKS5).
    TunnelHandshake { reason: &'static str, status: u16 },
    /// Inside a tunnel, neither TLS nor HTTP (403, connection closed).
    TunnelProtocolUnsupported,
    /// eBPF mode: the peer is a `deny` identity, or the kernel recorded no identity for it (403).
    Peer(identify::PeerRefusal),
    /// A budget of the identity's policy is exhausted (429).
    Budget(crate::policy::budget::BudgetKind),
    /// Past `proxy.max_connections` or `proxy.max_connections_per_client` (503).
    /// `reason` is `connection_limit` or `client_connection_limit`.
    ConnectionLimit { reason: &'static str },
    /// The request head was over the listener's header count or size limit (431). hyper has
    /// already answered; only the audit record is left (`request_header_fields_too_large`).
    HeadTooLarge,
}

/// Failures of the agent or the upstream: `action: error`.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("building upstream request: {0}")]
    BuildRequest(#[source] http::Error),
    #[error(transparent)]
    HeaderCasing(#[from] CasingError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The MCP gateway could not route (a required credential unavailable).
    #[error("{0}")]
    McpGateway(String),
    /// sni-only: the ClientHello names no server and no fallback is known (400).
    #[error("client hello missing sni")]
    NoServerName,
    #[error("replaying client hello: {0}")]
    ReplayHello(#[source] std::io::Error),
    /// The upstream answered 101 but its side of the upgrade failed; `status` was sent.
    #[error("websocket upstream upgrade: {source}")]
    WebSocketUpgrade { status: u16, source: hyper::Error },
}

/// What the client gets and what the audit record says, decided from an [`Outcome`].
#[derive(Debug)]
pub struct Answer {
    pub action: Action,
    pub status: u16,
    /// The response for an HTTP client (`None` on connection-level paths, where the client
    /// gets the protocol's own reply or a closed connection).
    pub response: Option<ProxyResponse>,
    pub reason: Option<&'static str>,
    pub rejected_by: Option<String>,
    pub stubbed_by: Option<String>,
    pub error: Option<String>,
}

impl Answer {
    fn new(action: Action, response: ProxyResponse) -> Self {
        Self {
            action,
            status: response.status().as_u16(),
            response: Some(response),
            reason: None,
            rejected_by: None,
            stubbed_by: None,
            error: None,
        }
    }

    fn bare(action: Action, status: u16) -> Self {
        Self {
            action,
            status,
            response: None,
            reason: None,
            rejected_by: None,
            stubbed_by: None,
            error: None,
        }
    }

    /// Writes the decided fields into the record; `action` and `status_code` are written when
    /// the record is finished (for HTTP, when the response body ends).
    pub fn record_into(&mut self, rec: &mut AuditRecord) {
        if let Some(r) = self.reason {
            rec.reason = Some(r.to_string());
        }
        if let Some(by) = self.rejected_by.take() {
            rec.rejected_by = Some(by);
        }
        if let Some(by) = self.stubbed_by.take() {
            rec.stubbed_by = Some(by);
        }
        if let Some(e) = self.error.take() {
            rec.error = Some(e);
        }
    }
}

impl Outcome {
    /// How a pipeline phase that did not forward ended; `None` when it forwarded.
    pub fn from_phase(phase: Phase, end: PhaseOutcome) -> Option<Outcome> {
        Some(match end {
            PhaseOutcome::Forward => return None,
            PhaseOutcome::Reject { by, response } => Outcome::Rejected {
                by,
                phase,
                response,
            },
            PhaseOutcome::Stub { by, response } => Outcome::Stubbed {
                by,
                phase,
                response,
            },
            PhaseOutcome::Error { by, error } => Outcome::TransformFailed { by, phase, error },
        })
    }
}

/// Decides the answer to an outcome.
pub fn answer(outcome: Outcome) -> Answer {
    match outcome {
        Outcome::Forwarded(response) => Answer::new(Action::Allow, response),
        Outcome::Opened => Answer::bare(Action::Allow, 200),
        Outcome::Relayed { status } => Answer::bare(Action::Allow, status),
        Outcome::Refused(r) => refused(r),
        Outcome::Denied { by } => Answer {
            rejected_by: Some(by.to_string()),
            ..Answer::new(Action::Reject, respond::forbidden())
        },
        Outcome::Rejected {
            by,
            phase: _,
            response,
        } => Answer {
            rejected_by: Some(by),
            ..Answer::new(Action::Reject, response.unwrap_or_else(respond::forbidden))
        },
        Outcome::McpDenied(response) => Answer::new(Action::Reject, response),
        Outcome::Stubbed {
            by,
            phase,
            response,
        } => Answer {
            // iron-proxy takes `stubbed_by` from the request phase's traces only.
            stubbed_by: (phase == Phase::Request).then_some(by),
            ..Answer::new(Action::Stub, response)
        },
        Outcome::TransformFailed { by, phase, error } => transform_failed(by, phase, &error),
        Outcome::Failed(f) => failed(&f),
        Outcome::ClientCancel { status } => Answer::bare(Action::ClientCancel, status),
    }
}

/// Counts what an outcome says beyond its audit record (upstream failures, by kind); called
/// with [`answer`] by everything that answers an outcome.
pub fn observe(outcome: &Outcome, metrics: &crate::metrics::Metrics) {
    if let Outcome::Failed(Failure::Upstream(e)) = outcome {
        metrics.upstream_error(e.kind().as_str());
    }
}

/// Connection-level paths (tunnel, sni-only, WebSocket relay): decides the answer and writes
/// the audit record now.
pub fn finish(mut audit: PendingAudit, outcome: Outcome) {
    observe(&outcome, audit.metrics());
    let mut a = answer(outcome);
    a.record_into(audit.record());
    audit.finish(a.action, a.status);
}

/// The 405 body for CONNECT on the HTTP or HTTPS listener (usually `https_proxy` pointed at
/// one of them): worded for both, since either may receive it.
pub const CONNECT_HERE_BODY: &str = "This iron-agent listener serves requests (plain HTTP, or HTTPS it terminates); it does not tunnel (CONNECT).\n\
For HTTPS through a proxy, set proxy.tunnel_listen in the config and point https_proxy/HTTPS_PROXY \
at that address (see docs/tunnels.md); http_proxy may stay on the HTTP listener. With DNS or eBPF \
interception no proxy variable is needed.\n";

/// The 503 body while managed mode waits for its first sync.
pub const NOT_READY_BODY: &str =
    "iron-agent is not ready: no config has been synced from the control plane yet\n";

fn refused(r: Refusal) -> Answer {
    let (response, reason) = match r {
        Refusal::Identify(i) => (respond::text(StatusCode::BAD_REQUEST, i.body()), i.reason()),
        Refusal::ConnectNotSupportedHere => (
            respond::text(StatusCode::METHOD_NOT_ALLOWED, CONNECT_HERE_BODY),
            "connect_not_supported_here",
        ),
        Refusal::DestinationMismatch => (respond::forbidden(), "destination_mismatch"),
        Refusal::TunnelHandshake { reason, status } => {
            return Answer {
                reason: Some(reason),
                rejected_by: Some(PROXY.into()),
                ..Answer::bare(Action::Reject, status)
            };
        }
        Refusal::HeadTooLarge => {
            return Answer {
                reason: Some("request_header_fields_too_large"),
                rejected_by: Some(PROXY.into()),
                ..Answer::bare(Action::Reject, 431)
            };
        }
        Refusal::TunnelProtocolUnsupported => (respond::forbidden(), "tunnel_protocol_unsupported"),
        Refusal::Peer(identify::PeerRefusal::NotReady) => (
            respond::text(StatusCode::SERVICE_UNAVAILABLE, NOT_READY_BODY),
            identify::PeerRefusal::NotReady.reason(),
        ),
        Refusal::Peer(p) => (respond::forbidden(), p.reason()),
        Refusal::Budget(kind) => (
            respond::text(StatusCode::TOO_MANY_REQUESTS, kind.body()),
            "budget_exceeded",
        ),
        Refusal::ConnectionLimit { reason } => {
            let mut resp = respond::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "iron-agent: too many open connections; retry later\n",
            );
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            (resp, reason)
        }
    };
    Answer {
        reason: Some(reason),
        rejected_by: Some(PROXY.into()),
        ..Answer::new(Action::Reject, response)
    }
}

fn transform_failed(by: String, phase: Phase, error: &TransformError) -> Answer {
    if let TransformError::BodyTooLarge { .. } = error {
        // Our decision 3: never forwarded truncated; a refusal by the transform that read it.
        return Answer {
            reason: Some("body_too_large"),
            rejected_by: Some(by),
            ..Answer::new(Action::Reject, respond::too_large(phase))
        };
    }
    Answer {
        error: Some(format!("transform {by} {}: {error}", phase.as_str())),
        ..Answer::new(Action::Error, respond::bad_gateway())
    }
}

fn failed(f: &Failure) -> Answer {
    let status = match f {
        Failure::NoServerName => 400,
        Failure::WebSocketUpgrade { status, .. } => *status,
        _ => 502,
    };
    if let Failure::Upstream(e) = f {
        tracing::debug!(kind = e.kind().as_str(), error = %error_chain(e), "upstream failed");
    }
    let error = match f {
        // The connector's error when there is one, with its causes; not the client's wrapper.
        Failure::Upstream(e) => e.render(),
        other => other.to_string(),
    };
    Answer {
        response: Some(respond::bad_gateway()),
        error: Some(error),
        ..Answer::bare(Action::Error, status)
    }
}

#[cfg(test)]
mod tests;
