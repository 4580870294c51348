//! The tunnel setup decision: the connection's policy judges the requested destination by host
//! (and port) only, and the setup leaves exactly one audit record (method `CONNECT`, empty
//! path, the target as host), whichever protocol opened it. A handshake refused before any
//! destination was judged ([`refuse`]) leaves one record of the same shape, `rejected_by: proxy`.

use crate::audit::{AuditRecord, PendingAudit, Trace};
use crate::identify::PeerRefusal;
use crate::outcome::{self, Outcome, Refusal as Refused};
use crate::policy::{ALLOWLIST, ConnectionCheck};
use crate::proxy::{ConnInfo, Runtime};

use super::{Protocol, Refusal, Target};

/// The setup record before its outcome: `host` is the target, `""` when none was named.
fn pending(
    rt: &Runtime,
    conn: &ConnInfo,
    target: Option<&Target>,
    protocol: Protocol,
) -> PendingAudit {
    let policy = rt
        .profiles
        .load()
        .get(conn.policy_id())
        .ok()
        .and_then(|p| p.audit_name.clone());
    let mut record = AuditRecord {
        host: target.map(Target::authority).unwrap_or_default(),
        method: "CONNECT".into(),
        // iron-proxy's setup record names the target host as `sni`.
        sni: target.map(|t| t.host.to_string()).unwrap_or_default(),
        remote_addr: conn.client().to_string(),
        mode: rt.mode.as_str(),
        protocol: protocol.as_str(),
        policy,
        ..AuditRecord::default()
    };
    conn.describe(&mut record, rt.users.as_ref());
    PendingAudit::new(record, rt.audit.clone())
}

/// Writes the one record of a handshake the agent refused itself (the client already has the
/// protocol's refusal). No policy ran.
pub fn refuse(rt: &Runtime, conn: &ConnInfo, protocol: Protocol, refusal: &Refusal) {
    let audit = pending(rt, conn, refusal.target.as_ref(), protocol);
    let refused = Refused::TunnelHandshake {
        reason: refusal.reason,
        status: refusal.status,
    };
    outcome::finish(audit, Outcome::Refused(refused));
}

/// The setup decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Open,
    Denied,
    /// Managed mode before the first sync: CONNECT gets 503 (SOCKS5 has no such code).
    NotReady,
}

/// Returns whether the tunnel may open, and the traces of the check.
pub fn authorize(
    rt: &Runtime,
    conn: &ConnInfo,
    target: &Target,
    protocol: Protocol,
) -> (Verdict, Vec<Trace>) {
    let mut audit = pending(rt, conn, Some(target), protocol);
    let profile = match rt.profile_for(conn) {
        Ok(p) => p,
        Err(r) => {
            // A `deny` identity, an unidentified peer or a removed policy: refused like a
            // denied destination.
            outcome::finish(audit, Outcome::Refused(Refused::Peer(r)));
            let verdict = match r {
                PeerRefusal::NotReady => Verdict::NotReady,
                _ => Verdict::Denied,
            };
            return (verdict, Vec::new());
        }
    };
    // Decision 9: method and path rules are enforced on each request inside the tunnel.
    let decision = profile.policy.judge_connection(&ConnectionCheck {
        host: &target.host,
        dest_ip: None,
        client_ip: Some(conn.client().ip()),
        requests_follow: true,
    });
    audit.record().request_transforms = decision.traces.clone();
    let outcome = if decision.allowed {
        Outcome::Opened
    } else {
        Outcome::Denied { by: ALLOWLIST }
    };
    outcome::finish(audit, outcome);
    let verdict = if decision.allowed {
        Verdict::Open
    } else {
        Verdict::Denied
    };
    (verdict, decision.traces)
}
