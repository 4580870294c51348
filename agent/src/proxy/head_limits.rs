//! Request head limits on the HTTP and HTTPS (MITM) listeners (HTTP/1.1): at most
//! [`MAX_HEADERS`] header fields and [`MAX_HEAD_BYTES`] of buffered head. hyper's HTTP/1 server
//! enforces both while parsing and answers 431 itself, before any request reaches the handler;
//! [`audit_parse_error`] gives that answer its one audit record once the connection ends.

use crate::audit::{AuditRecord, PendingAudit};
use crate::outcome::{self, Outcome, Refusal};
use crate::transform::Mode;

use super::{ConnInfo, Runtime};

/// Header fields per request head (hyper's default, set explicitly so it is ours to document).
pub(crate) const MAX_HEADERS: usize = 100;
/// Bytes of request head buffered before it must be complete (hyper's default is ~408 KiB;
/// 64 KiB is ample for real requests and caps what one connection can make the agent hold).
/// Below hyper's 65534-byte URI limit, so a long URI is also refused here, as 431, not 414.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// When hyper ended the connection because a request head was over a limit (it has answered
/// 431), writes that request's audit record with what is known: the connection, not the head.
/// Returns whether it did.
pub(crate) fn audit_parse_error(
    rt: &Runtime,
    conn: &ConnInfo,
    err: &(dyn std::error::Error + 'static),
) -> bool {
    if !is_head_too_large(err) {
        return false;
    }
    tracing::debug!(client = %conn.client(), "request head over the limits: 431");
    let mut record = AuditRecord {
        // Nothing of the head is trusted; the TLS name or the original destination says where
        // the client was going, when known.
        host: conn
            .sni
            .clone()
            .or_else(|| conn.dest_ip().map(|ip| ip.to_string()))
            .unwrap_or_default(),
        remote_addr: conn.client().to_string(),
        sni: conn.sni.clone().unwrap_or_default(),
        mode: if conn.tunnel.is_some() {
            Mode::Mitm.as_str()
        } else {
            rt.mode.as_str()
        },
        protocol: "http/1.1",
        ..AuditRecord::default()
    };
    conn.describe(&mut record, rt.users.as_ref());
    outcome::finish(
        PendingAudit::new(record, rt.audit.clone()),
        Outcome::Refused(Refusal::HeadTooLarge),
    );
    true
}

/// hyper's "message head is too large" (too many headers or too many bytes), anywhere in the
/// error's chain (the auto builder boxes it).
fn is_head_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_errors_are_not_head_limits() {
        let io = std::io::Error::other("reset");
        assert!(!is_head_too_large(&io));
    }
}
