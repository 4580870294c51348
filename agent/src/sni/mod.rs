//! `tls.mode: sni-only`: TLS is passed through, never terminated. The ClientHello is read (see
//! [`hello`]), the pipeline judges its server name as a host-only request, and on allow the
//! agent dials the upstream, replays the ClientHello and splices bytes both ways. The client
//! sees the upstream's real certificate; no CA is involved. One audit record per connection,
//! written when it is refused or when it closes.

pub mod hello;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{Action, AuditRecord, PendingAudit};
use crate::policy::normalize_host;
use crate::proxy::{ConnInfo, Runtime, handler, server};
use crate::transform::{ConnectionCheck, RequestCx};

/// Where an allowed connection goes.
pub struct Route {
    /// Judged and dialled when the ClientHello names no server (a tunnel's target, or a
    /// redirected connection's original destination address).
    pub fallback_host: Option<String>,
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
    conn.tls = true;
    // A redirected connection knows its real port; a direct one means HTTPS.
    let route = Route {
        fallback_host: conn.origin.as_ref().map(|o| o.orig_dst.ip().to_string()),
        port: conn.origin.as_ref().map_or(443, |o| o.orig_dst.port()),
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
            tracing::debug!(client = %conn.client, error = %e, "sni-only: no usable client hello");
            return;
        }
    };
    let mut record = AuditRecord {
        client: conn.client.to_string(),
        sni: hello.sni.clone().unwrap_or_default(),
        mode: rt.mode.as_str(),
        protocol: "tls",
        ..AuditRecord::default()
    };
    conn.describe(&mut record);
    let mut audit = PendingAudit::new(record, rt.audit.clone());
    let Some(host) = hello
        .sni
        .as_deref()
        .map(normalize_host)
        .or(route.fallback_host)
    else {
        audit.record().error = Some("client hello missing sni".into());
        return audit.finish(Action::Error, 400);
    };
    audit.record().host = host.clone();

    let set = rt.pipelines.load_full();
    let (policy_name, pipeline) = set.for_policy(conn.policy_id(&rt));
    audit.record().policy = policy_name.map(str::to_string);
    let mut cx = RequestCx::new(host.clone(), conn.client, rt.mode);
    cx.sni = hello.sni.clone();
    cx.dest_ip = conn.dest_ip();
    // No request will ever be visible: rules restricted by method or path cannot match.
    let check = ConnectionCheck {
        host: &host,
        dest_ip: conn.dest_ip(),
        requests_follow: false,
    };
    let mut traces = Vec::new();
    let allowed = pipeline.judge_connection(&mut cx, &check, &mut traces);
    audit.record().request_transforms = traces;
    if !allowed {
        return audit.finish(Action::Reject, 403);
    }
    if let Some(dest) = conn.dest_ip()
        && !handler::destination_matches(&rt, pipeline, &host, dest).await
    {
        let rec = audit.record();
        rec.reason = Some("destination_mismatch".into());
        rec.rejected_by = Some("proxy".into());
        return audit.finish(Action::Reject, 403);
    }

    let mut upstream = match rt.connector.dial(&host, route.port).await {
        Ok(s) => s,
        Err(e) => {
            audit.record().error = Some(e.to_string());
            return audit.finish(Action::Error, 502);
        }
    };
    if let Err(e) = upstream.write_all(&hello.raw).await {
        audit.record().error = Some(format!("replaying client hello: {e}"));
        return audit.finish(Action::Error, 502);
    }
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(client = %conn.client, host = %host, error = %e, "sni-only splice ended");
            }
        }
        // A spliced stream has no request boundary to drain at: close on shutdown.
        _ = shutdown.cancelled() => {}
    }
    audit.finish(Action::Allow, 200);
}
