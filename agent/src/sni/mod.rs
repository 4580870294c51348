//! `tls.mode: sni-only`: TLS is passed through, never terminated. The ClientHello is read (see
//! [`hello`]), the connection's [`crate::policy::Policy`] judges its server name by host only,
//! and on allow the agent dials the upstream, replays the ClientHello and splices bytes both
//! ways. The client
//! sees the upstream's real certificate; no CA is involved. One audit record per connection,
//! written when it is refused or when it closes.

pub mod hello;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{AuditRecord, PendingAudit};
use crate::identify::HostName;
use crate::outcome::{self, Failure, Outcome, Refusal};
use crate::policy::ConnectionCheck;
use crate::proxy::{ConnInfo, Profile, Runtime, server};
use crate::upstream::UpstreamError;

/// Where an allowed connection goes.
pub struct Route {
    /// Judged and dialled when the ClientHello names no server (a tunnel's target, or a
    /// redirected connection's original destination address).
    pub fallback_host: Option<HostName>,
    pub port: u16,
}

/// The HTTPS listener in sni-only mode.
pub async fn serve_https(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    server::accept_each("https", rt, listener, tracker, shutdown, https_conn).await;
}

async fn https_conn(
    rt: Arc<Runtime>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut conn = server::accepted(&rt, &stream, peer);
    if conn.over_limit.is_some() {
        // Passthrough has no way to answer 503 inside TLS it does not terminate: closed (the
        // warning was logged when the limit refused it).
        return;
    }
    conn.tls = true;
    // A redirected connection knows its real port; a direct one means HTTPS.
    let orig_dst = conn.identity.origin.as_ref().map(|o| o.orig_dst);
    let route = Route {
        fallback_host: orig_dst.map(|a| HostName::new(&a.ip().to_string())),
        port: orig_dst.map_or(443, |a| a.port()),
    };
    passthrough(rt, stream, conn, route, shutdown).await;
}

/// Judges one TLS connection by its ClientHello and, if allowed, splices it to the upstream.
pub async fn passthrough<S>(
    rt: Arc<Runtime>,
    mut client: S,
    conn: ConnInfo,
    route: Route,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = tokio::select! {
        _ = shutdown.cancelled() => return,
        h = hello::read(&mut client) => h,
    };
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            // Like a failed TLS handshake in MITM mode: nothing was answered, nothing audited.
            tracing::debug!(client = %conn.client(), error = %e, "sni-only: no usable client hello");
            return;
        }
    };
    let mut audit = begin_audit(&rt, &conn, &hello);
    let host = match judge(&rt, &conn, &hello, route.fallback_host, &mut audit).await {
        Ok(host) => host,
        Err(outcome) => return outcome::finish(audit, *outcome),
    };
    let mut upstream = match rt.connector.dial(&host, route.port).await {
        Ok(s) => s,
        Err(e) => {
            let failure = Failure::Upstream(UpstreamError::Connect(e));
            return outcome::finish(audit, Outcome::Failed(failure));
        }
    };
    if let Err(e) = upstream.write_all(&hello.raw).await {
        return outcome::finish(audit, Outcome::Failed(Failure::ReplayHello(e)));
    }
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(client = %conn.client(), host = %host, error = %e, "sni-only splice ended");
            }
        }
        // A spliced stream has no request boundary to drain at: close on shutdown.
        _ = shutdown.cancelled() => {}
    }
    outcome::finish(audit, Outcome::Opened);
}

/// The connection's one record, before its outcome.
fn begin_audit(rt: &Runtime, conn: &ConnInfo, hello: &hello::ClientHello) -> PendingAudit {
    let mut record = AuditRecord {
        remote_addr: conn.client().to_string(),
        sni: hello.sni.clone().unwrap_or_default(),
        mode: rt.mode.as_str(),
        protocol: "tls",
        ..AuditRecord::default()
    };
    conn.describe(&mut record, rt.users.as_ref());
    PendingAudit::new(record, rt.audit.clone())
}

/// Identify and policy for a connection whose requests are never visible: the server name (or
/// the fallback), the profile's allowlists by host only, and the destination check.
async fn judge(
    rt: &Runtime,
    conn: &ConnInfo,
    hello: &hello::ClientHello,
    fallback: Option<HostName>,
    audit: &mut PendingAudit,
) -> Result<HostName, Box<Outcome>> {
    let host = hello.sni.as_deref().map(HostName::new).or(fallback);
    let host = host.ok_or_else(|| Box::new(Outcome::Failed(Failure::NoServerName)))?;
    audit.record().host = host.to_string();
    let profile: Arc<Profile> = rt
        .profile_for(conn)
        .map_err(|r| Box::new(Outcome::Refused(Refusal::Peer(r))))?;
    audit.record().policy = profile.audit_name.clone();
    // No request will ever be visible: rules restricted by method or path cannot match.
    let decision = profile.policy.judge_connection(&ConnectionCheck {
        host: &host,
        dest_ip: conn.dest_ip(),
        client_ip: Some(conn.client().ip()),
        requests_follow: false,
    });
    audit.record().request_transforms = decision.traces;
    if !decision.allowed {
        return Err(Box::new(Outcome::Denied {
            by: crate::policy::ALLOWLIST,
        }));
    }
    if let Some(dest) = conn.dest_ip()
        && !profile
            .policy
            .destination_matches(&rt.resolver, &host, dest)
            .await
    {
        return Err(Box::new(Outcome::Refused(Refusal::DestinationMismatch)));
    }
    Ok(host)
}
