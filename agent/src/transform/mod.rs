//! The transform pipeline: one [`Transform`] trait, a per-request [`RequestCx`], and a
//! [`Pipeline`] that runs transforms in order and records one [`Trace`] per transform.
//!
//! One module per transform kind; [`build`] compiles the config's `transforms:` list into an
//! immutable [`Pipeline`] snapshot that the proxy swaps atomically.

pub mod allowlist;
pub mod annotate;
pub mod aws_auth;
pub mod body;
pub mod body_capture;
pub mod build;
pub mod gcp_auth;
pub mod gcp_id_token;
pub mod google;
pub mod header_allowlist;
pub mod headers;
pub mod hmac_sign;
pub mod json_reject;
pub mod oauth_token;
pub mod pipeline;
pub mod secrets;
pub mod signed_body;
pub mod uri;

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::audit::record::BodyCapture;
use crate::policy::MatchInput;

pub use body::{ProxyBody, ProxyRequest, ProxyResponse};
pub use build::{BuildError, build_pipeline};
pub use pipeline::{Pipeline, PipelineSet, RequestOutcome, ResponseOutcome};

pub use crate::audit::Trace;

/// A transform's decision for one phase.
pub enum Verdict {
    Continue,
    /// Stop and answer with this response (default: 403, `text/plain`, empty).
    Reject(Option<ProxyResponse>),
    /// Stop and answer with this response as a stub (no upstream contact).
    Stub(ProxyResponse),
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A body the transform must read exceeds the configured buffer limit (→ 413).
    #[error("body exceeds the {limit}-byte buffer limit")]
    BodyTooLarge { limit: u64 },
    #[error("reading body: {0}")]
    Body(String),
    #[error("{0}")]
    Failed(String),
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
    /// Host for matching: port stripped, lower-cased, no trailing dot.
    pub host: String,
    pub sni: Option<String>,
    pub client: SocketAddr,
    /// Original destination IP of a redirected connection, when known.
    pub dest_ip: Option<IpAddr>,
    pub mode: Mode,
    /// Buffer limits for transforms that must read bodies (`None` = unlimited).
    pub request_body_limit: Option<u64>,
    pub response_body_limit: Option<u64>,
    /// Filled by `body_capture`.
    pub body_capture: Option<BodyCapture>,
    annotations: Map<String, Value>,
}

impl RequestCx {
    pub fn new(host: String, client: SocketAddr, mode: Mode) -> Self {
        Self {
            host,
            sni: None,
            client,
            dest_ip: None,
            mode,
            request_body_limit: None,
            response_body_limit: None,
            body_capture: None,
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

    /// Could a request to `host` pass this transform? Only policy transforms say no.
    fn admits_host(&self, _host: &str) -> bool {
        true
    }

    /// Does a CIDR rule of this transform explicitly allow destination `ip`?
    fn allows_ip(&self, _ip: IpAddr) -> bool {
        false
    }

    /// Judges a connection before any request on it is visible (tunnel setup, sni-only).
    /// `None`: this transform acts on requests only and takes no part.
    fn judge_connection(&self, _cx: &mut RequestCx, _check: &ConnectionCheck<'_>) -> Option<bool> {
        None
    }
}

/// What a connection-level decision can see: where the connection goes, nothing more.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionCheck<'a> {
    /// Normalised host (or IP literal) without port.
    pub host: &'a str,
    pub dest_ip: Option<IpAddr>,
    /// Requests will follow and be judged one by one (tunnel setup, decision 9): rules
    /// restricted by method or path count by destination only. False when no request will
    /// ever be visible (sni-only): such rules cannot match, as in iron-proxy.
    pub requests_follow: bool,
}
