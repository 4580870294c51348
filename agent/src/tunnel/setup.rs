//! The tunnel setup decision: the pipeline judges the requested destination by host (and
//! port) only, and the setup leaves exactly one audit record (method `CONNECT`, empty path,
//! the target as host), whichever protocol opened it.

use crate::audit::{Action, AuditRecord, PendingAudit, Trace};
use crate::proxy::{ConnInfo, Runtime};
use crate::transform::{ConnectionCheck, RequestCx};

use super::{Protocol, Target};

/// Returns whether the tunnel may open, and the traces of the check.
pub fn authorize(
    rt: &Runtime,
    conn: &ConnInfo,
    target: &Target,
    protocol: Protocol,
) -> (bool, Vec<Trace>) {
    let mut record = AuditRecord {
        host: target.authority(),
        method: "CONNECT".into(),
        client: conn.client.to_string(),
        mode: rt.mode.as_str(),
        protocol: protocol.as_str(),
        ..AuditRecord::default()
    };
    conn.describe(&mut record);
    let mut audit = PendingAudit::new(record, rt.audit.clone());

    let set = rt.pipelines.load_full();
    let (policy_name, pipeline) = set.for_policy(conn.policy_id(rt));
    audit.record().policy = policy_name.map(str::to_string);
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
