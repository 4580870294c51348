//! One HTTP request through the agent. [`handle`] reads top to bottom as the data path:
//! identify → policy (destination check) → request transforms → upstream → response
//! transforms; every step that ends the request early returns the [`Outcome`], and the answer
//! and its audit record come from [`crate::outcome`].

use std::convert::Infallible;
use std::sync::Arc;

use http::uri::Scheme;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ConnInfo;
use super::audited_body::AuditedBody;
use super::forward::{self, Sent};
use super::linger::ClientBody;
use super::mcp_hook;
use super::runtime::{Profile, Runtime};
use super::websocket::{self, ClientSide};
use crate::audit::{AuditRecord, PendingAudit};
use crate::identify::{self, Target};
use crate::message::body::DecodedPath;
use crate::message::{ProxyRequest, ProxyResponse};
use crate::outcome::{self, Outcome, Refusal};
use crate::transform::{Mode, Phase, RequestCx};

/// hyper service entry point. Never fails: every outcome is a response plus one audit record.
pub async fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<AuditedBody>, Infallible> {
    let version = req.version();
    let mut req = req.map(|b| ClientBody::new(b, version));
    // Before anything reads the method: an HTTP/2 extended CONNECT becomes a GET handshake.
    let ws = websocket::detect(&mut req);
    let mut audit = begin_audit(&rt, &conn, &req, ws.is_some());
    if let Some(hit) = conn.over_limit {
        audit.record().host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            });
        audit.record().path = req.uri().path().to_string();
        return Ok(respond(
            audit,
            Outcome::Refused(Refusal::ConnectionLimit {
                reason: hit.reason(),
            }),
        ));
    }
    Ok(match exchange(&rt, &conn, req, ws, &mut audit).await {
        Ok(Done::Upgraded(client, upstream)) => {
            websocket::relay(&rt.websockets, audit, client, upstream)
        }
        Ok(Done::Answered(outcome)) => respond(audit, outcome),
        Err(outcome) => respond(audit, *outcome),
    })
}

/// How a request that was not refused early ended.
enum Done {
    Answered(Outcome),
    /// A WebSocket: the relay answers and audits.
    Upgraded(ClientSide, Response<Incoming>),
}

/// The stages, in order. `Err` ends the request early with that outcome (boxed: it is large,
/// and only refusals and failures take that path).
async fn exchange(
    rt: &Runtime,
    conn: &ConnInfo,
    req: Request<ClientBody>,
    ws: Option<ClientSide>,
    audit: &mut PendingAudit,
) -> Result<Done, Box<Outcome>> {
    // 1. identify
    let mut target = identify_request(conn, &req, audit)?;
    // 2. policy: the connection's profile, and where a redirected connection really goes
    let profile = rt
        .profile_for(conn)
        .map_err(|r| Box::new(Outcome::Refused(Refusal::Peer(r))))?;
    audit.record().policy = profile.audit_name.clone();
    check_destination(rt, conn, &profile, &target).await?;
    if let Some(budget) = &profile.budget {
        budget
            .admit(&target.host)
            .map_err(|k| Box::new(Outcome::Refused(Refusal::Budget(k))))?;
    }
    // 3. request transforms
    let (mut cx, mut req) = into_pipeline(rt, conn, req, &mut target);
    cx.caller = caller(rt, conn, &profile);
    let mut traces = Vec::new();
    let end = profile
        .pipeline
        .run_request(&mut cx, &mut req, &mut traces)
        .await;
    audit.record().request_transforms = traces;
    if let Some(outcome) = Outcome::from_phase(Phase::Request, end) {
        return Err(Box::new(outcome));
    }
    // 3b. MCP policy and gateway (after the transforms, as iron-proxy; WebSockets bypass it)
    let mcp = match ws {
        None => {
            mcp_hook::on_request(profile.mcp.as_deref(), &cx, &mut req, &mut target, audit).await?
        }
        Some(_) => None,
    };
    // 4. upstream (request-body bytes count against the policy's budget as they are sent)
    if let Some(budget) = profile.budget.clone() {
        req = count_body(req, budget);
    }
    let resp = match forward::send(rt, conn, req, &target, ws).await? {
        Sent::Response(resp) => resp,
        Sent::Upgraded(client, upstream) => return Ok(Done::Upgraded(client, upstream)),
    };
    let resp = mcp_hook::on_response(mcp, &cx, resp).await?;
    // 5. response transforms
    Ok(Done::Answered(
        response_phase(&profile, &mut cx, resp, audit).await,
    ))
}

/// Counts the request body's bytes against `budget` frame by frame.
fn count_body(
    req: crate::message::ProxyRequest,
    budget: Arc<crate::policy::budget::Budget>,
) -> crate::message::ProxyRequest {
    req.map(|b| {
        b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                budget.add_bytes(d.len() as u64);
            }
            f
        })
        .boxed_unsync()
    })
}

/// The record as soon as the request arrives, before anything can fail.
fn begin_audit(
    rt: &Runtime,
    conn: &ConnInfo,
    req: &Request<ClientBody>,
    websocket: bool,
) -> PendingAudit {
    // `path` is filled from identify's decoded path (or by a refusal), not decoded twice.
    let mut record = AuditRecord {
        method: req.method().to_string(),
        remote_addr: conn.client().to_string(),
        sni: conn.sni.clone().unwrap_or_default(),
        // A request the handler parsed inside a tunnel was seen whole, even in sni-only mode
        // (TLS in such a tunnel is passed through, never handled here): iron-proxy says `mitm`.
        mode: if conn.tunnel.is_some() {
            Mode::Mitm.as_str()
        } else {
            rt.mode.as_str()
        },
        protocol: if websocket {
            "websocket"
        } else {
            protocol_name(req.version())
        },
        ..AuditRecord::default()
    };
    conn.describe(&mut record, rt.users.as_ref());
    PendingAudit::new(record, rt.audit.clone())
}

/// Where the request goes; refuses ambiguous identities and CONNECT (tunnel listener only).
fn identify_request(
    conn: &ConnInfo,
    req: &Request<ClientBody>,
    audit: &mut PendingAudit,
) -> Result<Target, Box<Outcome>> {
    let scheme = if conn.tls {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let target = match identify::identify(req, scheme, conn.sni.as_deref()) {
        Ok(t) => t,
        Err((refusal, host)) => {
            if refusal == identify::Refusal::SniMismatch {
                tracing::warn!(sni = conn.sni.as_deref().unwrap_or(""), host = %host, "SNI/Host mismatch");
            }
            let rec = audit.record();
            rec.host = host;
            rec.path = percent_encoding::percent_decode_str(req.uri().path())
                .decode_utf8_lossy()
                .into_owned();
            return Err(Box::new(Outcome::Refused(Refusal::Identify(refusal))));
        }
    };
    audit.record().host = target.authority.to_string();
    audit.record().path = target.decoded_path.clone();
    if req.method() == Method::CONNECT {
        // CONNECT belongs on the tunnel listener; here it would be forwarded as a request.
        return Err(Box::new(Outcome::Refused(Refusal::ConnectNotSupportedHere)));
    }
    Ok(target)
}

/// A redirected connection must really be going where its host name lives (checked once per
/// host and connection: keep-alive requests for the same host skip the resolver).
async fn check_destination(
    rt: &Runtime,
    conn: &ConnInfo,
    profile: &Profile,
    target: &Target,
) -> Result<(), Box<Outcome>> {
    let Some(dest) = conn.dest_ip() else {
        return Ok(());
    };
    // Judge the name before resolving it: a name this policy can never admit is refused by its
    // allowlist anyway, and looking it up would hand the workload a DNS channel out
    // (`<data>.attacker.example`). Nothing is dialled for it, so nothing needs checking.
    if target.host.ip().is_none() && !profile.policy.may_allow_host(&target.host) {
        return Ok(());
    }
    if !conn.is_verified(&target.host)
        && !profile
            .policy
            .destination_matches(&rt.resolver, &target.host, dest)
            .await
    {
        return Err(Box::new(Outcome::Refused(Refusal::DestinationMismatch)));
    }
    conn.set_verified(&target.host);
    Ok(())
}

/// The request as the pipeline sees it, and its context. The decoded path and host move (not
/// copied: per-request allocations) from the target into the request and the context.
fn into_pipeline(
    rt: &Runtime,
    conn: &ConnInfo,
    req: Request<ClientBody>,
    target: &mut Target,
) -> (RequestCx, ProxyRequest) {
    let mut req: ProxyRequest = req.map(|b| b.map_err(Into::into).boxed_unsync());
    req.extensions_mut()
        .insert(DecodedPath(std::mem::take(&mut target.decoded_path)));
    let host = std::mem::take(&mut target.host);
    let mut cx = RequestCx::new(host, conn.identity.client, rt.mode);
    cx.sni = conn.sni.clone();
    cx.dest_ip = conn.dest_ip();
    cx.request_body_limit = rt.request_body_limit;
    cx.response_body_limit = rt.response_body_limit;
    cx.tunnel = conn.tunnel.as_ref().map(|t| t.audit.clone());
    (cx, req)
}

/// The request's identity for transforms: the kernel's record and the profile's name.
fn caller(rt: &Runtime, conn: &ConnInfo, profile: &Profile) -> identify::Caller {
    let task = conn.identity.task();
    identify::Caller {
        uid: task.map(|t| t.uid),
        user: task.and_then(|t| rt.users.name_of(t.uid)),
        cgroup: task.map(|t| t.cgroup_id),
        policy: profile.audit_name.clone(),
    }
}

async fn response_phase(
    profile: &Profile,
    cx: &mut RequestCx,
    mut resp: ProxyResponse,
    audit: &mut PendingAudit,
) -> Outcome {
    let mut traces = Vec::new();
    let end = profile
        .pipeline
        .run_response(cx, &mut resp, &mut traces)
        .await;
    audit.record().response_transforms = traces;
    audit.record().body_capture = cx.body_capture.take();
    Outcome::from_phase(Phase::Response, end).unwrap_or(Outcome::Forwarded(resp))
}

/// The audit `protocol` for a request's HTTP version.
fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "h2",
        http::Version::HTTP_09 | http::Version::HTTP_10 => "http/1.0",
        _ => "http/1.1",
    }
}

/// Hands the answer to hyper with the audit record riding on its body (written when the body
/// ends or the client goes away). Not boxed again: the inner body already is, and a second box
/// costs an allocation and a virtual call per frame.
fn respond(mut audit: PendingAudit, outcome: Outcome) -> Response<AuditedBody> {
    outcome::observe(&outcome, audit.metrics());
    let mut answer = outcome::answer(outcome);
    answer.record_into(audit.record());
    let resp = answer
        .response
        .take()
        .unwrap_or_else(outcome::respond::bad_gateway);
    let status = resp.status().as_u16();
    resp.map(|b| AuditedBody::new(b, audit, answer.action, status))
}
