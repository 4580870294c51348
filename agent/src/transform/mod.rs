//! The transform pipeline: one [`Transform`] trait for the request and response phases, a
//! per-request [`RequestCx`], and a [`Pipeline`] that runs transforms in order and records one
//! [`Trace`] per transform.
//!
//! One module per transform kind; [`registry`] is the one table that maps each config kind to
//! its runtime constructor and compiles a `transforms:` list into an immutable [`Pipeline`].
//! Connection-level decisions (tunnel setup, sni-only, DNS in eBPF mode, the destination
//! check) are not transforms: see [`crate::policy::Policy`].

pub mod allowlist;
pub mod annotate;
pub mod aws_auth;
pub mod body;
pub mod body_capture;
pub mod build;
pub mod gcp_auth;
pub mod gcp_id_token;
pub mod google;
pub mod grpc;
pub mod header_allowlist;
pub mod headers;
pub mod hmac_sign;
pub mod json_reject;
pub mod judge;
pub mod oauth_token;
pub mod pipeline;
pub mod registry;
pub mod secret_identity;
pub mod secrets;
pub mod signed_body;
pub mod uri;

use std::net::IpAddr;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::audit::record::{BodyCapture, TunnelAudit};
use crate::identify::{Caller, ClientAddr, HostName};
use crate::policy::MatchInput;

pub use crate::message::{ProxyBody, ProxyRequest, ProxyResponse};
pub use build::{Build, BuildContext, BuildProblem, TransformBuildError};
pub use pipeline::{Phase, Pipeline, RequestOutcome, ResponseOutcome};
pub use registry::{BuildError, build_pipeline};

pub use crate::audit::Trace;

/// A transform's decision for one phase.
pub enum Verdict {
    Continue,
    /// Stop and answer with this response (default: 403, `text/plain`, empty).
    Reject(Option<ProxyResponse>),
    /// Stop and answer with this response as a stub (no upstream contact).
    Stub(ProxyResponse),
}

/// Why a transform could not finish its phase. The pipeline stops; [`crate::outcome`] turns it
/// into the client's answer (413 for a body over the limit, 502 otherwise).
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A body the transform must read exceeds the configured buffer limit (→ 413).
    #[error("body exceeds the {limit}-byte buffer limit")]
    BodyTooLarge { limit: u64 },
    /// The body stream failed while the transform read it (the client went away, a reset).
    #[error("reading body: {0}")]
    Body(#[source] crate::message::BoxError),
    /// A value the transform built cannot go on the wire (the text names which; never a value).
    #[error("{0}")]
    Invalid(&'static str),
    /// A header name a transform was configured with or rendered is not a valid one.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("formatter: {0}")]
    Formatter(#[source] crate::template::TemplateError),
    /// An external service the transform calls failed or gave no answer in time (→ 502).
    #[error("{0}")]
    Service(String),
}

/// How the connection reached the agent; transforms see it as iron-proxy's `Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Mitm,
    SniOnly,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mitm => "mitm",
            Mode::SniOnly => "sni-only",
        }
    }
}

/// Per-request context shared by the transforms of one request.
pub struct RequestCx {
    /// Host for matching: port stripped, normalised.
    pub host: HostName,
    pub sni: Option<String>,
    pub client: ClientAddr,
    /// Original destination IP of a redirected connection, when known.
    pub dest_ip: Option<IpAddr>,
    pub mode: Mode,
    /// Buffer limits for transforms that must read bodies (`None` = unlimited).
    pub request_body_limit: Option<u64>,
    pub response_body_limit: Option<u64>,
    /// Filled by `body_capture`.
    pub body_capture: Option<BodyCapture>,
    /// The tunnel an inner request arrived through (target and its setup's traces).
    pub tunnel: Option<TunnelAudit>,
    /// What a transform carries from its request phase to its response phase (keyed by type).
    pub state: http::Extensions,
    /// Who sent the request (eBPF mode), for identity-bound secrets.
    pub caller: Caller,
    annotations: Map<String, Value>,
}

impl RequestCx {
    pub fn new(host: HostName, client: ClientAddr, mode: Mode) -> Self {
        Self {
            host,
            sni: None,
            client,
            dest_ip: None,
            mode,
            request_body_limit: None,
            response_body_limit: None,
            body_capture: None,
            tunnel: None,
            state: http::Extensions::new(),
            caller: Caller::default(),
            annotations: Map::new(),
        }
    }

    /// Adds an annotation to the running transform's trace. Never pass a secret value.
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.annotations.insert(key.into(), value.into());
    }

    pub(crate) fn take_annotations(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.annotations)
    }

    /// What `rules` match against for this request.
    pub fn match_input<'a>(&'a self, req: &'a ProxyRequest) -> MatchInput<'a> {
        MatchInput {
            host: &self.host,
            method: req.method().as_str(),
            path: body::decoded_path(req),
            dest_ip: self.dest_ip,
            client_ip: Some(self.client.0.ip()),
        }
    }
}

/// One pipeline step. Request phase in config order; response phase in the same order
/// (iron-proxy compatible).
#[async_trait]
pub trait Transform: Send + Sync {
    /// The name shown in traces and `rejected_by`.
    fn name(&self) -> &str;

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError>;

    async fn on_response(
        &self,
        _cx: &mut RequestCx,
        _resp: &mut ProxyResponse,
    ) -> Result<Verdict, TransformError> {
        Ok(Verdict::Continue)
    }
}
