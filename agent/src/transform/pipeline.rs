//! Runs transforms in order, one trace each, stopping at the first reject, stub or error.

use std::sync::Arc;
use std::time::Instant;

use super::{
    ConnectionCheck, ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict,
};
use crate::audit::{Trace, TraceAction};

/// An immutable, compiled pipeline. Swapped as a whole (`ArcSwap<Pipeline>`) on reload, so a
/// request always runs against one consistent snapshot.
#[derive(Default)]
pub struct Pipeline {
    transforms: Vec<Arc<dyn Transform>>,
}

/// The top-level pipeline plus one per `intercept.policies` entry (policy id = index + 1).
#[derive(Default)]
pub struct PipelineSet {
    pub default: Arc<Pipeline>,
    pub policies: Vec<(Option<String>, Arc<Pipeline>)>,
}

impl PipelineSet {
    /// The pipeline for a policy id reported by the kernel (0 or unknown = the default).
    pub fn for_policy(&self, id: u32) -> (Option<&str>, &Arc<Pipeline>) {
        match id
            .checked_sub(1)
            .and_then(|i| self.policies.get(i as usize))
        {
            Some((name, p)) => (Some(name.as_deref().unwrap_or("")), p),
            None => (None, &self.default),
        }
    }

    /// Whether any pipeline could allow a request to `host` (DNS in eBPF mode answers only
    /// names some policy may allow).
    pub fn may_allow_host(&self, host: &str) -> bool {
        self.default.may_allow_host(host)
            || self.policies.iter().any(|(_, p)| p.may_allow_host(host))
    }
}

/// How the request phase ended.
pub enum RequestOutcome {
    /// Every transform continued: forward upstream.
    Forward,
    /// A transform answered instead of the upstream.
    Reject {
        by: String,
        response: Option<ProxyResponse>,
    },
    Stub {
        by: String,
        response: ProxyResponse,
    },
    /// A transform failed.
    Error {
        by: String,
        error: TransformError,
    },
}

/// How the response phase ended.
pub enum ResponseOutcome {
    Forward,
    Replace {
        rejected: bool,
        response: Option<ProxyResponse>,
    },
    Error {
        by: String,
        error: TransformError,
    },
}

impl Pipeline {
    pub fn new(transforms: Vec<Arc<dyn Transform>>) -> Self {
        Self { transforms }
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Whether every transform could let a request to `host` through (method and path unknown).
    pub fn may_allow_host(&self, host: &str) -> bool {
        self.transforms.iter().all(|t| t.admits_host(host))
    }

    /// Whether a CIDR rule of this pipeline names `ip` (a hard-coded destination the operator
    /// allowed explicitly).
    pub fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        self.transforms.iter().any(|t| t.allows_ip(ip))
    }

    /// Names in order, for the startup log (`allowlist → secrets`).
    pub fn describe(&self) -> String {
        self.transforms
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// Runs the connection-level check of every transform that has one (tunnel setup,
    /// sni-only), one trace each, stopping at the first that refuses. True = allowed.
    pub fn judge_connection(
        &self,
        cx: &mut RequestCx,
        check: &ConnectionCheck<'_>,
        traces: &mut Vec<Trace>,
    ) -> bool {
        for t in &self.transforms {
            let started = Instant::now();
            let Some(allowed) = t.judge_connection(cx, check) else {
                continue;
            };
            let res = Ok(if allowed {
                Verdict::Continue
            } else {
                Verdict::Reject(None)
            });
            traces.push(trace(t.name(), &res, started, cx));
            if !allowed {
                return false;
            }
        }
        true
    }

    pub async fn run_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
        traces: &mut Vec<Trace>,
    ) -> RequestOutcome {
        for t in &self.transforms {
            let started = Instant::now();
            let res = t.on_request(cx, req).await;
            traces.push(trace(t.name(), &res, started, cx));
            let by = || t.name().to_string();
            match res {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Reject(response)) => {
                    return RequestOutcome::Reject { by: by(), response };
                }
                Ok(Verdict::Stub(response)) => return RequestOutcome::Stub { by: by(), response },
                Err(error) => return RequestOutcome::Error { by: by(), error },
            }
        }
        RequestOutcome::Forward
    }

    pub async fn run_response(
        &self,
        cx: &mut RequestCx,
        resp: &mut ProxyResponse,
        traces: &mut Vec<Trace>,
    ) -> ResponseOutcome {
        for t in &self.transforms {
            let started = Instant::now();
            let res = t.on_response(cx, resp).await;
            traces.push(trace(t.name(), &res, started, cx));
            match res {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Reject(r)) => {
                    return ResponseOutcome::Replace {
                        rejected: true,
                        response: r,
                    };
                }
                Ok(Verdict::Stub(r)) => {
                    return ResponseOutcome::Replace {
                        rejected: false,
                        response: Some(r),
                    };
                }
                Err(error) => {
                    return ResponseOutcome::Error {
                        by: t.name().to_string(),
                        error,
                    };
                }
            }
        }
        ResponseOutcome::Forward
    }
}

/// One transform's trace entry for either phase. A body over the buffer limit is recorded as a
/// reject (the client gets 413), other errors as errors.
fn trace(
    name: &str,
    res: &Result<Verdict, TransformError>,
    started: Instant,
    cx: &mut RequestCx,
) -> Trace {
    let (action, error) = match res {
        Ok(Verdict::Continue) => (TraceAction::Allow, None),
        Ok(Verdict::Reject(_)) => (TraceAction::Reject, None),
        Ok(Verdict::Stub(_)) => (TraceAction::Stub, None),
        Err(TransformError::BodyTooLarge { .. }) => {
            cx.annotate("rejected", "body_too_large");
            (TraceAction::Reject, None)
        }
        Err(e) => (TraceAction::Error, Some(e.to_string())),
    };
    Trace {
        name: name.to_string(),
        action,
        duration_ms: started.elapsed().as_micros() as f64 / 1000.0,
        error,
        annotations: cx.take_annotations(),
    }
}
