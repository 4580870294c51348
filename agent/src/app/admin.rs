//! The metrics listener: Prometheus text at `/metrics`, liveness at `/healthz`, readiness at
//! `/readyz`.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::accept_loop;
use crate::audit::AuditSink;
use crate::transform::{ProxyBody, body};

pub async fn serve(
    listener: TcpListener,
    audit: Arc<AuditSink>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_loop(
        "metrics",
        listener,
        tracker,
        shutdown,
        move |stream, _peer, _shutdown| {
            let audit = audit.clone();
            async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let audit = audit.clone();
                    async move { Ok::<_, Infallible>(route(req.uri().path(), &audit)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        },
    )
    .await;
}

fn route(path: &str, audit: &AuditSink) -> Response<ProxyBody> {
    let (status, ctype, text) = match path {
        "/healthz" | "/readyz" => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "OK".to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics_text(audit),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n".into(),
        ),
    };
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

fn metrics_text(audit: &AuditSink) -> String {
    let c = &audit.counters;
    let mut s = String::new();
    s.push_str("# HELP iron_agent_requests_total Requests answered, by audit action.\n");
    s.push_str("# TYPE iron_agent_requests_total counter\n");
    for (action, n) in [
        ("allow", &c.allow),
        ("reject", &c.reject),
        ("stub", &c.stub),
        ("error", &c.error),
        ("client_cancel", &c.client_cancel),
    ] {
        let _ = writeln!(
            s,
            "iron_agent_requests_total{{action=\"{action}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    s.push_str(
        "# HELP iron_agent_audit_dropped_total Audit records not written because the log writer fell behind.\n",
    );
    s.push_str("# TYPE iron_agent_audit_dropped_total counter\n");
    let _ = writeln!(
        s,
        "iron_agent_audit_dropped_total {}",
        c.dropped.load(Ordering::Relaxed)
    );
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::metrics_text;
    use crate::audit::AuditSink;

    #[test]
    fn metrics_report_requests_and_audit_drops() {
        let sink = AuditSink::discard();
        sink.counters.allow.fetch_add(3, Ordering::Relaxed);
        sink.counters.dropped.fetch_add(2, Ordering::Relaxed);
        let text = metrics_text(&sink);
        assert!(
            text.contains("iron_agent_requests_total{action=\"allow\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE iron_agent_audit_dropped_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\niron_agent_audit_dropped_total 2\n"),
            "{text}"
        );
    }
}
