//! The tunnel setup decision: the pipeline judges the requested destination by host (and
//! port) only, and the setup leaves exactly one audit record (method `CONNECT`, empty path,
//! the target as host), whichever protocol opened it. A handshake refused before any
//! destination was judged ([`refuse`]) leaves one record of the same shape, `rejected_by: proxy`.

use crate::audit::{Action, AuditRecord, PendingAudit, Trace};
use crate::proxy::{ConnInfo, Runtime};
use crate::transform::{ConnectionCheck, RequestCx};

use super::{Protocol, Refusal, Target};

/// The setup record before its outcome: `host` is the target, `""` when none was named.
fn pending(
    rt: &Runtime,
    conn: &ConnInfo,
    target: Option<&Target>,
    protocol: Protocol,
    policy: Option<&str>,
) -> PendingAudit {
    let mut record = AuditRecord {
        host: target.map(Target::authority).unwrap_or_default(),
        method: "CONNECT".into(),
        client: conn.client.to_string(),
        mode: rt.mode.as_str(),
        protocol: protocol.as_str(),
        policy: policy.map(str::to_string),
        ..AuditRecord::default()
    };
    conn.describe(&mut record);
    PendingAudit::new(record, rt.audit.clone())
}

/// Writes the one record of a handshake the agent refused itself (the client already has the
/// protocol's refusal). No transform ran.
pub fn refuse(rt: &Runtime, conn: &ConnInfo, protocol: Protocol, refusal: &Refusal) {
    let set = rt.pipelines.load_full();
    let (policy_name, _) = set.for_policy(conn.policy_id(rt));
    let mut audit = pending(rt, conn, refusal.target.as_ref(), protocol, policy_name);
    audit.record().rejected_by = Some("proxy".into());
    audit.record().reason = Some(refusal.reason.into());
    audit.finish(Action::Reject, refusal.status);
}

/// Returns whether the tunnel may open, and the traces of the check.
pub fn authorize(
    rt: &Runtime,
    conn: &ConnInfo,
    target: &Target,
    protocol: Protocol,
) -> (bool, Vec<Trace>) {
    let set = rt.pipelines.load_full();
    let (policy_name, pipeline) = set.for_policy(conn.policy_id(rt));
    let mut audit = pending(rt, conn, Some(target), protocol, policy_name);
    let mut cx = RequestCx::new(target.host.clone(), conn.client, rt.mode);
    // Decision 9: method and path rules are enforced on each request inside the tunnel.
    let check = ConnectionCheck {
        host: &target.host,
        dest_ip: None,
        requests_follow: true,
    };
    let mut traces = Vec::new();
    let allowed = pipeline.judge_connection(&mut cx, &check, &mut traces);
    audit.record().request_transforms = traces.clone();
    if allowed {
        audit.finish(Action::Allow, 200);
    } else {
        audit.finish(Action::Reject, 403);
    }
    (allowed, traces)
}
