//! Runs transforms in order, one trace each, stopping at the first reject, stub or error.

use std::sync::Arc;
use std::time::Instant;

use super::{ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict};
use crate::audit::{Trace, TraceAction};

/// Which half of the exchange a transform ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

/// An immutable, compiled pipeline, shared by every request of one identity profile.
#[derive(Default)]
pub struct Pipeline {
    transforms: Vec<Arc<dyn Transform>>,
}

/// How one phase of the pipeline ended. `by` names the transform that decided.
pub enum PhaseOutcome {
    /// Every transform continued: forward (the request upstream, the response to the client).
    Forward,
    /// A transform refused; `None` means the default 403.
    Reject {
        by: String,
        response: Option<ProxyResponse>,
    },
    /// A transform answered itself.
    Stub { by: String, response: ProxyResponse },
    /// A transform failed.
    Error { by: String, error: TransformError },
}

/// The request phase's outcome.
pub type RequestOutcome = PhaseOutcome;
/// The response phase's outcome.
pub type ResponseOutcome = PhaseOutcome;

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pipeline").field(&self.describe()).finish()
    }
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
            traces.push(trace(t.name(), &res, started, cx));
            if let Some(end) = decided(t.as_ref(), res) {
                return end;
            }
        }
        PhaseOutcome::Forward
    }

    /// A dry run of the request phase (`iron-agent policy test`, built with a detached token
    /// client and placeholder secrets): as [`Self::run_request`], except that a transform that
    /// needed a service the dry run never contacts (a token endpoint, a judge's LLM) does not
    /// decide, so the transforms after it still show what they would do. The second value
    /// says, per trace, whether its transform was cut short that way.
    pub async fn dry_run_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
        traces: &mut Vec<Trace>,
    ) -> (RequestOutcome, Vec<bool>) {
        let mut cut_short = Vec::new();
        for t in &self.transforms {
            let started = Instant::now();
            let res = t.on_request(cx, req).await;
            let tr = trace(t.name(), &res, started, cx);
            let needed_service = not_contacted(&tr);
            traces.push(tr);
            cut_short.push(needed_service);
            if needed_service {
                continue;
            }
            if let Some(end) = decided(t.as_ref(), res) {
                return (end, cut_short);
            }
        }
        (PhaseOutcome::Forward, cut_short)
    }

    /// The response phase, in the same order as the request phase (iron-proxy compatible).
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
            if let Some(end) = decided(t.as_ref(), res) {
                return end;
            }
        }
        PhaseOutcome::Forward
    }
}

/// Whether a trace says its transform needed a service a detached token client refused.
fn not_contacted(tr: &Trace) -> bool {
    let marker = crate::mint::http::NOT_CONTACTED;
    tr.error.as_deref().is_some_and(|e| e.contains(marker))
        || serde_json::to_string(&tr.annotations).is_ok_and(|a| a.contains(marker))
}

/// `None` to go on with the next transform.
fn decided(t: &dyn Transform, res: Result<Verdict, TransformError>) -> Option<PhaseOutcome> {
    let by = || t.name().to_string();
    match res {
        Ok(Verdict::Continue) => None,
        Ok(Verdict::Reject(response)) => Some(PhaseOutcome::Reject { by: by(), response }),
        Ok(Verdict::Stub(response)) => Some(PhaseOutcome::Stub { by: by(), response }),
        Err(error) => Some(PhaseOutcome::Error { by: by(), error }),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use http::StatusCode;

    use super::*;
    use crate::identify::{ClientAddr, HostName};
    use crate::transform::{Mode, body};

    /// A transform that answers each phase as scripted and counts its calls.
    struct Scripted {
        name: &'static str,
        request: fn() -> Result<Verdict, TransformError>,
        response: fn() -> Result<Verdict, TransformError>,
        calls: Arc<AtomicUsize>,
    }

    fn cont() -> Result<Verdict, TransformError> {
        Ok(Verdict::Continue)
    }

    fn step(
        name: &'static str,
        request: fn() -> Result<Verdict, TransformError>,
        response: fn() -> Result<Verdict, TransformError>,
    ) -> (Arc<dyn Transform>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let t = Scripted {
            name,
            request,
            response,
            calls: calls.clone(),
        };
        (Arc::new(t), calls)
    }

    #[async_trait]
    impl Transform for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        async fn on_request(
            &self,
            cx: &mut RequestCx,
            _req: &mut ProxyRequest,
        ) -> Result<Verdict, TransformError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            cx.annotate("seen_by", self.name);
            (self.request)()
        }
        async fn on_response(
            &self,
            _cx: &mut RequestCx,
            _resp: &mut ProxyResponse,
        ) -> Result<Verdict, TransformError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            (self.response)()
        }
    }

    fn cx() -> RequestCx {
        let client = ClientAddr("127.0.0.1:1".parse().unwrap());
        RequestCx::new(HostName::new("a.test"), client, Mode::Mitm)
    }

    fn req() -> ProxyRequest {
        http::Request::new(body::empty())
    }

    fn names(traces: &[Trace]) -> Vec<(&str, TraceAction)> {
        traces.iter().map(|t| (t.name.as_str(), t.action)).collect()
    }

    #[tokio::test]
    async fn all_continue_forwards_with_one_trace_each_in_order() {
        let (a, _) = step("a", cont, cont);
        let (b, _) = step("b", cont, cont);
        let p = Pipeline::new(vec![a, b]);
        assert_eq!(p.describe(), "a → b");
        let mut traces = Vec::new();
        let out = p.run_request(&mut cx(), &mut req(), &mut traces).await;
        assert!(matches!(out, PhaseOutcome::Forward));
        assert_eq!(
            names(&traces),
            [("a", TraceAction::Allow), ("b", TraceAction::Allow)]
        );
        // Annotations belong to the transform that made them.
        assert_eq!(traces[0].annotations["seen_by"], "a");
        assert_eq!(traces[1].annotations["seen_by"], "b");
        assert!(traces.iter().all(|t| t.error.is_none()));
    }

    #[tokio::test]
    async fn a_reject_stops_the_request_phase() {
        let (a, _) = step("a", || Ok(Verdict::Reject(None)), cont);
        let (b, b_calls) = step("b", cont, cont);
        let p = Pipeline::new(vec![a, b]);
        let mut traces = Vec::new();
        let out = p.run_request(&mut cx(), &mut req(), &mut traces).await;
        match out {
            PhaseOutcome::Reject { by, response } => {
                assert_eq!(by, "a");
                assert!(response.is_none());
            }
            _ => panic!("expected a reject"),
        }
        assert_eq!(names(&traces), [("a", TraceAction::Reject)]);
        assert_eq!(
            b_calls.load(Ordering::SeqCst),
            0,
            "nothing after a reject runs"
        );
    }

    #[tokio::test]
    async fn a_stub_answers_with_its_response() {
        let stub = || {
            Ok(Verdict::Stub(body::respond(
                StatusCode::ACCEPTED,
                "text/plain",
                "stubbed",
            )))
        };
        let (a, _) = step("a", cont, cont);
        let (b, _) = step("b", stub, cont);
        let p = Pipeline::new(vec![a, b]);
        let mut traces = Vec::new();
        match p.run_request(&mut cx(), &mut req(), &mut traces).await {
            PhaseOutcome::Stub { by, response } => {
                assert_eq!(by, "b");
                assert_eq!(response.status(), StatusCode::ACCEPTED);
            }
            _ => panic!("expected a stub"),
        }
        assert_eq!(
            names(&traces),
            [("a", TraceAction::Allow), ("b", TraceAction::Stub)]
        );
    }

    #[tokio::test]
    async fn an_error_is_traced_with_its_message() {
        let (a, _) = step("a", || Err(TransformError::Invalid("bad value")), cont);
        let p = Pipeline::new(vec![a]);
        let mut traces = Vec::new();
        match p.run_request(&mut cx(), &mut req(), &mut traces).await {
            PhaseOutcome::Error { by, error } => {
                assert_eq!(by, "a");
                assert!(matches!(error, TransformError::Invalid("bad value")));
            }
            _ => panic!("expected an error"),
        }
        assert_eq!(traces[0].action, TraceAction::Error);
        assert_eq!(traces[0].error.as_deref(), Some("bad value"));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_traced_as_a_reject() {
        let too_large = || Err(TransformError::BodyTooLarge { limit: 10 });
        let (a, _) = step("a", too_large, cont);
        let p = Pipeline::new(vec![a]);
        let mut traces = Vec::new();
        let out = p.run_request(&mut cx(), &mut req(), &mut traces).await;
        assert!(matches!(
            out,
            PhaseOutcome::Error {
                error: TransformError::BodyTooLarge { limit: 10 },
                ..
            }
        ));
        assert_eq!(traces[0].action, TraceAction::Reject);
        assert_eq!(traces[0].annotations["rejected"], "body_too_large");
        assert!(traces[0].error.is_none());
    }

    #[tokio::test]
    async fn the_response_phase_runs_in_request_order() {
        let (a, a_calls) = step("a", cont, cont);
        let (b, _) = step("b", cont, || Ok(Verdict::Reject(None)));
        let (c, c_calls) = step("c", cont, cont);
        let p = Pipeline::new(vec![a, b, c]);
        let mut traces = Vec::new();
        let mut resp = http::Response::new(body::empty());
        let out = p.run_response(&mut cx(), &mut resp, &mut traces).await;
        assert!(matches!(out, PhaseOutcome::Reject { ref by, .. } if by == "b"));
        assert_eq!(
            names(&traces),
            [("a", TraceAction::Allow), ("b", TraceAction::Reject)]
        );
        assert_eq!(a_calls.load(Ordering::SeqCst), 1);
        assert_eq!(c_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_empty_pipeline_forwards_everything() {
        let p = Pipeline::default();
        assert!(p.is_empty());
        let mut traces = Vec::new();
        let out = p.run_request(&mut cx(), &mut req(), &mut traces).await;
        assert!(matches!(out, PhaseOutcome::Forward));
        assert!(traces.is_empty());
    }
}
