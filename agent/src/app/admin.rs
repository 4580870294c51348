//! The metrics listener: Prometheus text at `/metrics`, liveness at `/healthz`, readiness at
//! `/readyz`. It is bound and serving first, before secrets are resolved and the other
//! listeners bound, so probes see `/readyz` 503 (and `/healthz` 200) while the agent starts,
//! and it keeps answering while the agent drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode, header};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use agent_common::harden::HARDEN_COUNTERS;

use crate::accept::{BindError, accept_loop, bind_tcp};
use crate::config::ListenAddr;
use crate::ebpf::Interceptor;
use crate::metrics::kernel::{KernelCounter, KernelFamily};
use crate::metrics::{Health, Metrics};
use crate::transform::{ProxyBody, body};

/// The running metrics listener.
pub struct Admin {
    pub health: Arc<Health>,
    addr: Option<SocketAddr>,
    stop: CancellationToken,
}

impl Admin {
    /// Binds `listen` and serves at once (a bind failure is fatal at startup, like every
    /// listener).
    pub async fn start(
        listen: &ListenAddr,
        health: Health,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, BindError> {
        let listener = bind_tcp("metrics", listen).await?;
        let health = Arc::new(health);
        let stop = CancellationToken::new();
        let addr = listener.local_addr().ok();
        let state = Scrape {
            health: health.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(serve(listener, state, TaskTracker::new(), stop.clone()));
        Ok(Self { health, addr, stop })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stops serving (the last step of the shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Exports the eBPF programs' counters (read from their maps at each scrape) once attached:
/// the interception programs' map, and the hardening programs' map (their denials join
/// `iron_agent_ebpf_denials_total`; left out when it cannot be read).
pub fn export_kernel_counters(metrics: &Metrics, interceptor: Option<&Arc<Interceptor>>) {
    let Some(i) = interceptor else {
        metrics.set_kernel_source(None);
        return;
    };
    let names: Vec<(KernelFamily, Arc<str>)> = agent_common::COUNTERS
        .iter()
        .map(|c| kernel_name(&format!("{c:?}")))
        .collect();
    let harden_names: Vec<(KernelFamily, Arc<str>)> = HARDEN_COUNTERS
        .iter()
        .map(|c| kernel_name(&format!("{c:?}")))
        .collect();
    let i = Arc::downgrade(i);
    metrics.set_kernel_source(Some(Arc::new(move || {
        let i = i.upgrade()?;
        let counters = i.counters().ok()?;
        let mut out: Vec<KernelCounter> = agent_common::COUNTERS
            .iter()
            .zip(&names)
            .map(|(c, (family, label))| KernelCounter {
                family: *family,
                label: label.clone(),
                value: counters.get(*c),
            })
            .collect();
        if let Ok(h) = crate::ebpf::harden::pinned_counters(i.pin_dir()) {
            out.extend(
                h.iter()
                    .zip(&harden_names)
                    .map(|((_, value), (family, label))| KernelCounter {
                        family: *family,
                        label: label.clone(),
                        value: *value,
                    }),
            );
        }
        Some(out)
    })));
}

/// `RedirectHttps` -> (redirect, `https`), `DenyTcp` -> (denial, `tcp`), `PeerRestored` ->
/// (event, `peer_restored`): derived from the counter's name so new counters need no table.
fn kernel_name(debug: &str) -> (KernelFamily, Arc<str>) {
    let (family, rest) = if let Some(r) = debug.strip_prefix("Redirect") {
        (KernelFamily::Redirect, r)
    } else if let Some(r) = debug.strip_prefix("Deny") {
        (KernelFamily::Denial, r)
    } else {
        (KernelFamily::Event, debug)
    };
    let mut label = String::new();
    for (n, ch) in rest.chars().enumerate() {
        if ch.is_ascii_uppercase() && n > 0 {
            label.push('_');
        }
        label.push(ch.to_ascii_lowercase());
    }
    (family, label.into())
}

/// What the listener answers from: readiness and the registry.
#[derive(Clone)]
struct Scrape {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

async fn serve(
    listener: TcpListener,
    state: Scrape,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_loop(
        "metrics",
        listener,
        tracker,
        shutdown,
        move |stream, _peer, _shutdown| {
            let state = state.clone();
            async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        Ok::<_, Infallible>(route(req.uri().path(), &state.health, &state.metrics))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        },
    )
    .await;
}

const TEXT: &str = "text/plain; charset=utf-8";

fn route(path: &str, health: &Health, metrics: &Metrics) -> Response<ProxyBody> {
    let (status, ctype, text) = match path {
        "/healthz" => (StatusCode::OK, TEXT, "OK".to_string()),
        "/readyz" => match health.readiness() {
            Ok(()) => (StatusCode::OK, TEXT, "OK".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "404 page not found\n".into()),
    };
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_health() {
        let h = Health::standalone();
        let m = Metrics::new();
        let route = |path: &str, h: &Health| route(path, h, &m);
        assert_eq!(route("/healthz", &h).status(), StatusCode::OK);
        assert_eq!(
            route("/readyz", &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.pipeline_built();
        h.listeners_serving();
        assert_eq!(route("/readyz", &h).status(), StatusCode::OK);
        h.draining();
        assert_eq!(
            route("/readyz", &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(route("/healthz", &h).status(), StatusCode::OK);
        assert_eq!(route("/metrics", &h).status(), StatusCode::OK);
        assert_eq!(route("/nope", &h).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn kernel_counter_names() {
        let (f, l) = kernel_name("RedirectDnsSendmsg");
        assert_eq!((f, &*l), (KernelFamily::Redirect, "dns_sendmsg"));
        let (f, l) = kernel_name("DenyNoListener");
        assert_eq!((f, &*l), (KernelFamily::Denial, "no_listener"));
        let (f, l) = kernel_name("PeerRestored");
        assert_eq!((f, &*l), (KernelFamily::Event, "peer_restored"));
        // Hardening counters are denials too, and their reasons never collide with the
        // interception ones.
        let harden: Vec<(KernelFamily, Arc<str>)> = HARDEN_COUNTERS
            .iter()
            .map(|c| kernel_name(&format!("{c:?}")))
            .collect();
        assert!(harden.iter().all(|(f, _)| *f == KernelFamily::Denial));
        assert!(harden.iter().any(|(_, l)| &**l == "bind_agent_port"));
        for c in agent_common::COUNTERS {
            let (_, l) = kernel_name(&format!("{c:?}"));
            assert!(harden.iter().all(|(_, h)| *h != l), "{l}");
        }
    }
}
