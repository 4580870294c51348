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
    s
}
