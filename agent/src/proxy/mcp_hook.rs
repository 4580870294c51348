//! The MCP step of the data path, between the request transforms and the upstream: judge the
//! JSON-RPC request (deny → the error envelope, nothing dialled), re-route it through an
//! `mcp_gateway` route, and filter the response on its way back (see [`crate::mcp`]).

use serde_json::Value;

use crate::audit::mcp::McpAudit;
use crate::audit::{PendingAudit, Trace};
use crate::identify::Target;
use crate::mcp::filter::ResponseFilter;
use crate::mcp::gateway::GatewayRouted;
use crate::mcp::{Judgement, Mcp};
use crate::message::{ProxyRequest, ProxyResponse};
use crate::outcome::{Failure, Outcome};
use crate::transform::{Phase, RequestCx, TransformError};

/// Runs MCP policy on a request that passed the transforms. `Ok(Some)`: filter the response.
pub async fn on_request(
    mcp: Option<&Mcp>,
    cx: &RequestCx,
    req: &mut ProxyRequest,
    target: &mut Target,
    audit: &mut PendingAudit,
) -> Result<Option<ResponseFilter>, Box<Outcome>> {
    let Some(mcp) = mcp else {
        return Ok(None);
    };
    let Some(server) = mcp.server_for(&cx.match_input(req)).cloned() else {
        return Ok(None);
    };
    let group = McpAudit {
        server: server.name().to_string(),
        ..McpAudit::default()
    };
    let redact = secret_in_body(&audit.record().request_transforms);
    let messages = group.messages.clone();
    audit.record().mcp = Some(group);
    let filter = match mcp
        .judge(&server, req, cx.request_body_limit, &messages, redact)
        .await
    {
        Judgement::Forward(f) => f,
        Judgement::Deny(resp) => return Err(Box::new(Outcome::McpDenied(resp))),
        Judgement::Failed(error) => return Err(failed(error, Phase::Request)),
    };
    route(mcp, cx, req, target, audit)?;
    Ok(filter)
}

/// Sends an allowed request through the first matching gateway route, if any.
fn route(
    mcp: &Mcp,
    cx: &RequestCx,
    req: &mut ProxyRequest,
    target: &mut Target,
    audit: &mut PendingAudit,
) -> Result<(), Box<Outcome>> {
    let Some(route) = mcp.gateway.route(&cx.match_input(req)) else {
        return Ok(());
    };
    let to = route
        .apply(req)
        .map_err(|e| Box::new(Outcome::Failed(Failure::McpGateway(e))))?;
    target.scheme = to.scheme;
    target.authority = to.authority;
    req.extensions_mut().insert(GatewayRouted);
    // The upstream's own Host, not the client's (virtual hosting at the route's server).
    if let Ok(v) = http::HeaderValue::from_str(target.authority.as_str()) {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if let Some(m) = audit.record().mcp.as_mut() {
        m.gateway = Some(to.audit);
    }
    Ok(())
}

/// Filters the upstream's answer (`tools/list`) and audits its messages.
pub async fn on_response(
    filter: Option<ResponseFilter>,
    cx: &RequestCx,
    resp: ProxyResponse,
) -> Result<ProxyResponse, Box<Outcome>> {
    match filter {
        None => Ok(resp),
        Some(f) => f
            .apply(resp, cx.response_body_limit)
            .await
            .map_err(|e| failed(e, Phase::Response)),
    }
}

fn failed(error: TransformError, phase: Phase) -> Box<Outcome> {
    Box::new(Outcome::TransformFailed {
        by: "mcp".into(),
        phase,
        error,
    })
}

/// Whether a `secrets` transform swapped a real value into the body: the arguments may then
/// hold a credential, and the audit leaves them out.
fn secret_in_body(traces: &[Trace]) -> bool {
    traces.iter().any(|t| {
        t.annotations
            .get("swapped")
            .and_then(Value::as_array)
            .is_some_and(|swaps| {
                swaps.iter().any(|s| {
                    s.get("locations")
                        .and_then(Value::as_array)
                        .is_some_and(|l| l.iter().any(|x| x == "body"))
                })
            })
    })
}
