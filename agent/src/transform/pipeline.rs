//! Runs transforms in order, one trace each, stopping at the first reject, stub or error.

use std::sync::Arc;
use std::time::Instant;

use super::{ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict};
use crate::audit::{Trace, TraceAction};

/// An immutable, compiled pipeline. Swapped as a whole (`ArcSwap<Pipeline>`) on reload, so a
/// request always runs against one consistent snapshot.
#[derive(Default)]
pub struct Pipeline {
    transforms: Vec<Arc<dyn Transform>>,
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

    /// Names in order, for the startup log (`allowlist → secrets`).
    pub fn describe(&self) -> String {
        self.transforms
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" → ")
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
            let (action, error) = match &res {
                Ok(Verdict::Continue) => (TraceAction::Allow, None),
                Ok(Verdict::Reject(_)) => (TraceAction::Reject, None),
                Ok(Verdict::Stub(_)) => (TraceAction::Stub, None),
                Err(TransformError::BodyTooLarge { .. }) => {
                    cx.annotate("rejected", "body_too_large");
                    (TraceAction::Reject, None)
                }
                Err(e) => (TraceAction::Error, Some(e.to_string())),
            };
            traces.push(trace(t.name(), action, started, error, cx));
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
            let (action, error) = match &res {
                Ok(Verdict::Continue) => (TraceAction::Allow, None),
                Ok(Verdict::Reject(_)) => (TraceAction::Reject, None),
                Ok(Verdict::Stub(_)) => (TraceAction::Stub, None),
                Err(TransformError::BodyTooLarge { .. }) => {
                    cx.annotate("rejected", "body_too_large");
                    (TraceAction::Reject, None)
                }
                Err(e) => (TraceAction::Error, Some(e.to_string())),
            };
            traces.push(trace(t.name(), action, started, error, cx));
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

fn trace(
    name: &str,
    action: TraceAction,
    started: Instant,
    error: Option<String>,
    cx: &mut RequestCx,
) -> Trace {
    Trace {
        name: name.to_string(),
        action,
        duration_ms: started.elapsed().as_micros() as f64 / 1000.0,
        error,
        annotations: cx.take_annotations(),
    }
}
