//! One HTTP request through the agent. Reads top to bottom as the data path:
//! identify → pipeline (policy + transforms) → upstream → response pipeline → audit.

use std::convert::Infallible;
use std::sync::Arc;

use http::uri::Scheme;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::audited_body::AuditedBody;
use super::{ConnInfo, Runtime, header_case, headers, respond, websocket};
use crate::audit::{Action, AuditRecord, PendingAudit};
use crate::identify::{self, Refusal, Target};
use crate::transform::body::DecodedPath;
use crate::transform::{
    ProxyRequest, ProxyResponse, RequestCx, RequestOutcome, ResponseOutcome, TransformError,
};

/// hyper service entry point. Never fails: every outcome is a response plus one audit record.
pub async fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    mut req: http::Request<Incoming>,
) -> Result<Response<AuditedBody>, Infallible> {
    // Before anything reads the method: an HTTP/2 extended CONNECT becomes a GET handshake.
    let ws = websocket::detect(&mut req);
    // `path` is filled from identify's decoded path (or by the refusal below), not decoded twice.
    let record = AuditRecord {
        method: req.method().to_string(),
        client: conn.client.to_string(),
        sni: conn.sni.clone().unwrap_or_default(),
        mode: rt.mode.as_str(),
        protocol: if ws.is_some() {
            "websocket"
        } else {
            protocol_name(req.version())
        },
        ..AuditRecord::default()
    };
    let mut audit = PendingAudit::new(record, rt.audit.clone());
    conn.describe(audit.record());

    // 1. identify
    let scheme = if conn.tls {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut target = match identify::identify(&req, scheme, conn.sni.as_deref()) {
        Ok(t) => t,
        Err((refusal, host)) => {
            audit.record().path = percent_encoding::percent_decode_str(req.uri().path())
                .decode_utf8_lossy()
                .into_owned();
            return Ok(refuse(audit, refusal, host, &conn));
        }
    };
    audit.record().host = target.authority.to_string();
    audit.record().path = target.decoded_path.clone();
    if req.method() == Method::CONNECT {
        // CONNECT belongs on the tunnel listener; here it would be forwarded as a request.
        audit.record().reason = Some("connect_not_supported_here".into());
        audit.record().rejected_by = Some("proxy".into());
        let resp = respond::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use proxy.tunnel_listen for CONNECT\n",
        );
        return Ok(finish(audit, Action::Reject, resp));
    }

    let mut req: ProxyRequest = req.map(|b| b.map_err(Into::into).boxed_unsync());
    // Moved, not cloned (per-request allocations): from here on the host is `cx.host`.
    req.extensions_mut()
        .insert(DecodedPath(std::mem::take(&mut target.decoded_path)));
    let mut cx = RequestCx::new(std::mem::take(&mut target.host), conn.client, rt.mode);
    cx.sni = conn.sni.clone();
    cx.dest_ip = conn.dest_ip();
    cx.request_body_limit = rt.request_body_limit;
    cx.response_body_limit = rt.response_body_limit;

    // 2. policy and transforms (one snapshot for the whole request; per-identity in eBPF mode)
    let set = rt.pipelines.load_full();
    let (policy_name, pipeline) = set.for_policy(conn.policy_id(&rt));
    let pipeline = pipeline.clone();
    audit.record().policy = policy_name.map(str::to_string);
    if let Some(dest) = conn.dest_ip()
        && !conn.is_verified(&cx.host)
        && !destination_matches(&rt, &pipeline, &cx.host, dest).await
    {
        audit.record().reason = Some("destination_mismatch".into());
        audit.record().rejected_by = Some("proxy".into());
        return Ok(finish(audit, Action::Reject, respond::forbidden()));
    }
    if conn.dest_ip().is_some() {
        // Keep-alive requests for the same host skip the resolver on this connection.
        conn.set_verified(&cx.host);
    }
    let mut traces = Vec::new();
    let outcome = pipeline.run_request(&mut cx, &mut req, &mut traces).await;
    audit.record().request_transforms = traces;
    match outcome {
        RequestOutcome::Forward => {}
        RequestOutcome::Reject { response, .. } => {
            let resp = response.unwrap_or_else(respond::forbidden);
            return Ok(finish(audit, Action::Reject, resp));
        }
        RequestOutcome::Stub { response, .. } => return Ok(finish(audit, Action::Stub, response)),
        RequestOutcome::Error { by, error } => {
            return Ok(transform_failed(audit, &by, "request", error));
        }
    }

    // 3. upstream
    if let Err(e) = prepare_upstream(&mut req, &target) {
        audit.record().error = Some(format!("building upstream request: {e}"));
        return Ok(finish(audit, Action::Error, respond::bad_gateway()));
    }
    if let Some(t) = &conn.tunnel {
        // Inside a tunnel the client chose the port when it opened it.
        crate::tunnel::pin_port(req.uri_mut(), t.port);
    }
    if let Err(e) = header_case::apply(&mut req).await {
        audit.record().error = Some(e.to_string());
        return Ok(finish(audit, Action::Error, respond::bad_gateway()));
    }
    let upstream = match ws {
        None => rt.upstream.send(req).await,
        Some(client) => match websocket::handshake(&rt, &client, req).await {
            Ok(websocket::Handshake::Switched(resp)) => {
                return Ok(websocket::relay(&rt.websockets, audit, client, resp));
            }
            Ok(websocket::Handshake::Answered(resp)) => Ok(resp),
            Err(e) => Err(e),
        },
    };
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            audit.record().error = Some(e.to_string());
            return Ok(finish(audit, Action::Error, respond::bad_gateway()));
        }
    };
    let mut resp: ProxyResponse = upstream.map(|b| b.map_err(Into::into).boxed_unsync());
    headers::strip_response(resp.headers_mut());

    // 4. response transforms
    let mut traces = Vec::new();
    let outcome = pipeline.run_response(&mut cx, &mut resp, &mut traces).await;
    audit.record().response_transforms = traces;
    audit.record().body_capture = cx.body_capture.take();
    match outcome {
        ResponseOutcome::Forward => Ok(finish(audit, Action::Allow, resp)),
        ResponseOutcome::Replace { rejected, response } => {
            let action = if rejected {
                Action::Reject
            } else {
                Action::Stub
            };
            Ok(finish(
                audit,
                action,
                response.unwrap_or_else(respond::forbidden),
            ))
        }
        ResponseOutcome::Error { by, error } => Ok(transform_failed(audit, &by, "response", error)),
    }
}

/// The audit `protocol` for a request's HTTP version.
fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "h2",
        http::Version::HTTP_09 | http::Version::HTTP_10 => "http/1.0",
        _ => "http/1.1",
    }
}

/// A redirected connection's real destination must be where the named host lives: an address
/// the agent's resolver returns for it, or one a CIDR rule allows. Otherwise the workload is
/// using an allowed name as cover for a hard-coded IP (domain fronting, pinned addresses).
pub(crate) async fn destination_matches(
    rt: &Runtime,
    pipeline: &crate::transform::Pipeline,
    host: &str,
    dest: std::net::IpAddr,
) -> bool {
    let dest = crate::policy::unmap(dest);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return crate::policy::unmap(ip) == dest;
    }
    if pipeline.allows_ip(dest) {
        return true;
    }
    match rt.resolver.lookup_ip(host).await {
        Ok(ips) => ips.into_iter().any(|ip| crate::policy::unmap(ip) == dest),
        Err(_) => false,
    }
}

/// Points the request at the upstream: absolute URI, `Host` as the client named it, and no
/// hop-by-hop headers. Nothing is added (no Via, User-Agent or Accept-Encoding).
///
/// One model whatever the client spoke: the request leaves as HTTP/1.1 and the pooled client
/// sends it as HTTP/2 when the upstream negotiated h2 (then the URI's authority becomes
/// `:authority`, the equal `Host` rides along as RFC 9113 §8.3.1 permits, and `TE: trailers`
/// survives for gRPC).
fn prepare_upstream(req: &mut ProxyRequest, target: &Target) -> Result<(), http::Error> {
    let uri = target.upstream_uri(req.uri())?;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    headers::strip_request(req.headers_mut());
    // Usually the client's Host already is the authority: keep it rather than re-allocate.
    let host_matches = req
        .headers()
        .get(header::HOST)
        .is_some_and(|h| h.as_bytes() == target.authority.as_str().as_bytes());
    if !host_matches && let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
        req.headers_mut().insert(header::HOST, v);
    }
    Ok(())
}

/// Hands the response to hyper with the audit record riding on its body. Not boxed again:
/// the inner body already is, and a second box costs an allocation and a virtual call per frame.
fn finish(audit: PendingAudit, action: Action, resp: ProxyResponse) -> Response<AuditedBody> {
    let status = resp.status().as_u16();
    resp.map(|b| AuditedBody::new(b, audit, action, status))
}

fn refuse(
    mut audit: PendingAudit,
    refusal: Refusal,
    host: String,
    conn: &ConnInfo,
) -> Response<AuditedBody> {
    if refusal == Refusal::SniMismatch {
        tracing::warn!(sni = conn.sni.as_deref().unwrap_or(""), host = %host, "SNI/Host mismatch");
    }
    let rec = audit.record();
    rec.host = host;
    rec.reason = Some(refusal.reason().into());
    rec.rejected_by = Some("proxy".into());
    finish(
        audit,
        Action::Reject,
        respond::text(StatusCode::BAD_REQUEST, refusal.body()),
    )
}

fn transform_failed(
    mut audit: PendingAudit,
    by: &str,
    phase: &str,
    error: TransformError,
) -> Response<AuditedBody> {
    if let TransformError::BodyTooLarge { .. } = error {
        audit.record().rejected_by = Some(by.to_string());
        audit.record().reason = Some("body_too_large".into());
        return finish(audit, Action::Reject, respond::too_large(phase));
    }
    audit.record().error = Some(format!("transform {by} {phase}: {error}"));
    finish(audit, Action::Error, respond::bad_gateway())
}
