//! Serving: the bound listeners, one server task per listener, and shutdown (signal or fatal
//! error, then the drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admin::Admin;
use super::{AppError, bound_addr};
use crate::accept;
use crate::config::Config;
use crate::postgres::PostgresProxy;
use crate::proxy::{Runtime, server};
use crate::transform::Mode;

/// In-flight requests get this long to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued OTEL records get this long to reach the collector at shutdown.
const OTEL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A server task's end: its name, and why it stopped when that is an error.
pub(super) type Ended = (&'static str, Option<String>);

/// Every listener, bound before anything is served.
pub(super) struct Listeners {
    dns: Option<(UdpSocket, TcpListener)>,
    http: TcpListener,
    https: TcpListener,
    tunnel: Option<TcpListener>,
}

impl Listeners {
    pub(super) async fn bind(cfg: &Config) -> Result<Self, AppError> {
        let dns = if cfg.dns.enabled {
            Some(accept::bind_dns(&cfg.dns.listen).await?)
        } else {
            None
        };
        let http = accept::bind_tcp("http", &cfg.proxy.http_listen).await?;
        let https = accept::bind_tcp("https", &cfg.proxy.https_listen).await?;
        let tunnel = match &cfg.proxy.tunnel_listen {
            Some(addr) => Some(accept::bind_tcp("tunnel", addr).await?),
            None => None,
        };
        Ok(Self {
            dns,
            http,
            https,
            tunnel,
        })
    }

    pub(super) fn http_addr(&self) -> Result<SocketAddr, AppError> {
        bound_addr(&self.http)
    }

    pub(super) fn https_addr(&self) -> Result<SocketAddr, AppError> {
        bound_addr(&self.https)
    }

    pub(super) fn tunnel_addr(&self) -> Option<SocketAddr> {
        self.tunnel.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub(super) fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().and_then(|(u, _)| u.local_addr().ok())
    }

    /// The one startup line naming every listener and the top-level transforms.
    pub(super) fn log_startup(&self, rt: &Runtime, metrics: Option<SocketAddr>) {
        let describe = rt.profiles.load().default_profile().pipeline.describe();
        let dns = self
            .dns_addr()
            .map_or("disabled".to_string(), |a| a.to_string());
        tracing::info!(
            target: crate::telemetry::STARTUP,
            http_listen = %addr_of(&self.http),
            https_listen = %addr_of(&self.https),
            metrics_listen = %metrics.map(|a| a.to_string()).unwrap_or_default(),
            tunnel_listen = %self.tunnel.as_ref().map_or("disabled".to_string(), addr_of),
            dns_listen = %dns,
            transforms = %describe,
            "iron-agent starting"
        );
    }
}

/// Serves until SIGINT/SIGTERM (Ok) or until a server stops (Err), then drains. `admin` (the
/// metrics listener, already serving) reports ready once every server runs.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    cfg: &Config,
    rt: Arc<Runtime>,
    listeners: Listeners,
    ebpf: bool,
    control: super::reload::Control,
    signals: Signals,
    postgres: Option<Arc<PostgresProxy>>,
    admin: Admin,
) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let conns = TaskTracker::new();
    let names = ebpf.then(|| Arc::new(ProfileNames(rt.clone(), postgres.clone())));
    let mut servers = spawn_servers(cfg, &rt, listeners, names, &conns, &shutdown);
    control.spawn(&mut servers, &conns, &shutdown);
    admin.health.listeners_serving();
    let result = tokio::select! {
        sig = shutdown_signal(signals) => {
            tracing::info!(signal = sig, "received signal, shutting down");
            Ok(())
        }
        Some(done) = servers.join_next() => {
            let (component, reason) = match done {
                Ok((c, r)) => (c, r.unwrap_or_else(|| "stopped unexpectedly".into())),
                Err(e) => ("server", e.to_string()),
            };
            // Reported once, by the caller (one line per fatal error).
            Err(AppError::Fatal { component, reason })
        }
    };
    admin.health.draining();
    drain(&rt, shutdown, conns, servers, postgres, ebpf).await;
    admin.stop();
    result
}

fn spawn_servers(
    cfg: &Config,
    rt: &Arc<Runtime>,
    l: Listeners,
    names: Option<Arc<ProfileNames>>,
    conns: &TaskTracker,
    shutdown: &CancellationToken,
) -> JoinSet<Ended> {
    let mut servers = JoinSet::new();
    let (c, s) = (conns.clone(), shutdown.clone());
    servers.spawn(named("http", server::serve_http(rt.clone(), l.http, c, s)));
    let (c, s) = (conns.clone(), shutdown.clone());
    match rt.mode {
        Mode::Mitm => servers.spawn(named(
            "https",
            server::serve_https(rt.clone(), l.https, c, s),
        )),
        Mode::SniOnly => servers.spawn(named(
            "https",
            crate::sni::serve_https(rt.clone(), l.https, c, s),
        )),
    };
    if let Some(tunnel) = l.tunnel {
        let (c, s) = (conns.clone(), shutdown.clone());
        servers.spawn(named(
            "tunnel",
            crate::tunnel::serve(rt.clone(), tunnel, c, s),
        ));
    }
    if let Some((udp, tcp)) = l.dns {
        let (dns_cfg, resolver, token) = (cfg.dns.clone(), rt.resolver.clone(), shutdown.clone());
        let metrics = rt.metrics.clone();
        // In eBPF mode the DNS server answers real addresses, only for names a profile may allow.
        let names = names.map(|n| n as Arc<dyn crate::dns::NamePolicy>);
        servers.spawn(async move {
            match crate::dns::serve(dns_cfg, udp, tcp, resolver, names, metrics, token).await {
                Ok(()) => ("dns", None),
                Err(e) => ("dns", Some(e.to_string())),
            }
        });
    }
    servers
}

/// Stops accepting, gives in-flight requests [`DRAIN_TIMEOUT`], closes WebSockets (each writes
/// its record), and flushes the audit log.
async fn drain(
    rt: &Runtime,
    shutdown: CancellationToken,
    conns: TaskTracker,
    mut servers: JoinSet<Ended>,
    postgres: Option<Arc<PostgresProxy>>,
    ebpf: bool,
) {
    shutdown.cancel();
    conns.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
    }
    if let Some(pg) = &postgres {
        pg.stop(Duration::from_secs(2)).await;
    }
    servers.abort_all();
    rt.websockets.close(Duration::from_secs(2)).await;
    if ebpf {
        // Fail closed by design; say so, and how to release the governed users.
        tracing::info!(
            "iron-agent stopped; its eBPF programs stay attached, so governed traffic stays denied until the agent runs again or `iron-agent detach` removes them"
        );
    } else {
        tracing::info!("iron-agent stopped");
    }
    rt.audit.flush(Duration::from_secs(2));
    // The export thread needs the runtime's workers for its I/O: wait off them.
    let audit = rt.audit.clone();
    let _ = tokio::task::spawn_blocking(move || audit.close_export(OTEL_FLUSH_TIMEOUT)).await;
}

/// DNS answers in eBPF mode follow the live profiles' policies, plus the PostgreSQL upstreams
/// (their connections are redirected to the proxy).
struct ProfileNames(Arc<Runtime>, Option<Arc<PostgresProxy>>);

impl crate::dns::NamePolicy for ProfileNames {
    fn may_allow(&self, host: &str) -> bool {
        self.0.profiles.load().may_allow_host(host)
            || self.1.as_ref().is_some_and(|pg| {
                let host = crate::policy::normalize_host(host);
                pg.upstream_hosts().contains(&host)
            })
    }
}

async fn named(name: &'static str, fut: impl std::future::Future<Output = ()>) -> Ended {
    fut.await;
    (name, None)
}

fn addr_of(l: &TcpListener) -> String {
    l.local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_default()
}

/// SIGTERM/SIGINT handlers, installed before any listener is announced: a supervisor that
/// signals as soon as it sees the agent up must get a clean shutdown, not the default kill.
pub(super) struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    pub(super) fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Signals(Some((term, int))),
            _ => Signals(None),
        }
    }
}

async fn shutdown_signal(signals: Signals) -> &'static str {
    let Some((mut term, mut int)) = signals.0 else {
        // Without signal handlers the agent can still be stopped by SIGKILL; wait forever.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
