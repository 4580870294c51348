//! `grpc` (§12.13): hands matching requests and their responses to an external
//! `transform.v1.TransformService` (proto in `agent/proto/`), which answers CONTINUE (optionally
//! with edits), or REJECT (with the response to send). Requests its `rules` do not match (empty
//! rules = every request) are untouched in both phases.
//!
//! Per phase: rules → body (only when `send_*_body`, bounded by the buffer limit) → one unary
//! call under `timeout` ([`client`]) → the answer applied ([`convert`]). The service's
//! `annotations` go into this transform's trace. A failed call (service down, TLS failure,
//! deadline, non-OK status) is a transform error: the pipeline stops and the client gets 502,
//! never a forward (fail closed, as iron-proxy does).

mod client;
mod convert;
pub mod proto;

use async_trait::async_trait;

use crate::config::transforms::GrpcConfig;
use crate::policy::RuleSet;
use crate::transform::body::{buffer_request, buffer_response};
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::{
    ProxyRequest, ProxyResponse, RequestCx, Transform, TransformError, Verdict,
};
use proto::{TransformAction, TransformContext, TransformRequestRequest, TransformResponseRequest};

pub struct Grpc {
    /// Tells this instance's request snapshot apart from other `grpc` transforms' in one request.
    id: u64,
    name: String,
    rules: RuleSet,
    send_request_body: bool,
    send_response_body: bool,
    client: client::Client,
}

/// The requests the `grpc` transforms of one request sent in their request phase, by instance:
/// the response phase sends the same request alongside the response.
#[derive(Clone, Default)]
struct Sent(Vec<(u64, proto::HttpRequest)>);

impl Build for Grpc {
    type Config = GrpcConfig;

    fn build(cfg: &GrpcConfig, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        Ok(Self {
            id: cx.instance_id(),
            name: cfg.name.clone(),
            rules: RuleSet::from_configs(&cfg.rules),
            send_request_body: cfg.send_request_body,
            send_response_body: cfg.send_response_body,
            client: client::Client::new(&cfg.target, &cfg.tls, cfg.timeout.0)?,
        })
    }
}

impl Grpc {
    fn context(cx: &RequestCx) -> TransformContext {
        TransformContext {
            sni: cx.sni.clone().unwrap_or_default(),
            client_cert_der: Vec::new(),
            tunnel: cx.tunnel.as_ref().map(convert::tunnel),
        }
    }

    /// A failed call, described by its gRPC status code only: the status message is the
    /// service's free text and may echo request data (injected credentials included), so it
    /// never reaches a log line or the audit record.
    fn failed(&self, rpc: &str, status: &tonic::Status) -> TransformError {
        TransformError::Service(format!("grpc {rpc} to {}: {:?}", self.name, status.code()))
    }
}

fn annotate(cx: &mut RequestCx, annotations: std::collections::HashMap<String, String>) {
    let mut pairs: Vec<_> = annotations.into_iter().collect();
    pairs.sort();
    for (k, v) in pairs {
        cx.annotate(k, v);
    }
}

#[async_trait]
impl Transform for Grpc {
    /// The configured `name`: it labels traces and `rejected_by`, as in iron-proxy.
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        // Empty rules = every request (unlike the allowlist, where empty denies all).
        if !self.rules.is_empty() && !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        let body = if self.send_request_body {
            Some(buffer_request(req, cx.request_body_limit).await?)
        } else {
            None
        };
        let request = convert::request(cx, req, body);
        let call = TransformRequestRequest {
            context: Some(Self::context(cx)),
            request: Some(request.clone()),
        };
        let answer = self
            .client
            .get()
            .transform_request(call)
            .await
            .map_err(|s| self.failed("TransformRequest", &s))?
            .into_inner();
        annotate(cx, answer.annotations);
        let mut sent = cx.state.remove::<Sent>().unwrap_or_default();
        sent.0.push((self.id, request));
        cx.state.insert(sent);
        match TransformAction::try_from(answer.action) {
            Ok(TransformAction::Reject) => Ok(Verdict::Reject(convert::reject(answer.response)?)),
            // UNSPECIFIED is CONTINUE; so is a value this proto does not know (iron-proxy's
            // switch has no other case).
            _ => {
                if let Some(m) = answer.modified_request {
                    convert::apply_request(req, m)?;
                }
                Ok(Verdict::Continue)
            }
        }
    }

    async fn on_response(
        &self,
        cx: &mut RequestCx,
        resp: &mut ProxyResponse,
    ) -> Result<Verdict, TransformError> {
        // No snapshot: the rules did not match this request (or the request phase never ran).
        let Some(request) = cx
            .state
            .get::<Sent>()
            .and_then(|s| s.0.iter().find(|(id, _)| *id == self.id))
            .map(|(_, r)| r.clone())
        else {
            return Ok(Verdict::Continue);
        };
        let body = if self.send_response_body {
            Some(buffer_response(resp, cx.response_body_limit).await?)
        } else {
            None
        };
        let call = TransformResponseRequest {
            context: Some(Self::context(cx)),
            request: Some(request),
            response: Some(convert::response(resp, body)),
        };
        let answer = self
            .client
            .get()
            .transform_response(call)
            .await
            .map_err(|s| self.failed("TransformResponse", &s))?
            .into_inner();
        annotate(cx, answer.annotations);
        match TransformAction::try_from(answer.action) {
            Ok(TransformAction::Reject) => {
                Ok(Verdict::Reject(convert::reject(answer.modified_response)?))
            }
            _ => {
                if let Some(m) = answer.modified_response {
                    convert::apply_response(resp, m)?;
                }
                Ok(Verdict::Continue)
            }
        }
    }
}

#[cfg(test)]
mod tests;
