//! Wiring: build the runtime from a validated config, bind every listener, serve until a
//! signal or a fatal error, then drain.

pub mod admin;
pub mod default;
pub mod identity;
pub mod intercept;
pub mod jail;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{self, BindError};
use crate::audit::AuditSink;
use crate::config::{Config, TlsMode};
use crate::proxy::{Runtime, server};
use crate::resolve::{ResolveError, Resolver};
use crate::secrets::SecretRegistry;
use crate::tls::{self, CertAuthority, LeafCache, TlsError};
use crate::transform::{self, BuildError, Mode, PipelineSet};
use crate::upstream::{Connector, DenyList, UpstreamClient, UpstreamProxies};

/// In-flight requests get this long to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("building transform pipeline:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Pipeline(Vec<BuildError>),
    #[error("{}", .0.join("\n"))]
    Unsupported(Vec<String>),
    #[error("{0}")]
    Intercept(#[from] intercept::SetupError),
    #[error("initializing cert cache: {0}")]
    Tls(#[from] TlsError),
    #[error("initializing resolver: {0}")]
    Resolver(#[from] ResolveError),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("dns.upstream_resolver: {0}")]
    UpstreamResolver(String),
    #[error("{}", .0.join("\n"))]
    UpstreamProxy(Vec<String>),
    #[error("{0}")]
    Postgres(#[from] crate::postgres::PgError),
    #[error("fatal error: {component}: {reason}")]
    Fatal {
        component: &'static str,
        reason: String,
    },
}

/// Everything in a valid config that this build cannot enforce yet. Running without it would
/// silently drop a policy the operator wrote, so each one refuses startup (fail closed).
pub fn unsupported(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(errs) = transform::build_pipeline(&cfg.transforms, &mut SecretRegistry::default()) {
        out.extend(errs.iter().map(|e| e.to_string()));
    }
    for (i, p) in cfg.intercept.policies.iter().enumerate() {
        if let Err(errs) = transform::build_pipeline(&p.transforms, &mut SecretRegistry::default())
        {
            out.extend(errs.iter().map(|e| format!("intercept.policies[{i}].{e}")));
        }
    }
    let not_yet = |what: &str| format!("{what} is not supported yet");
    if cfg.mcp.is_some() {
        out.push(not_yet("mcp"));
    }
    // Not unsupported, but checked here so that `check-config` and `install` report bad values.
    out.extend(UpstreamProxies::check(&cfg.proxy.upstream_proxy));
    if cfg.management.listen.is_some() {
        out.push(not_yet("management.listen"));
    }
    out
}

/// Runs the agent until SIGINT/SIGTERM (Ok) or a fatal error (Err).
pub async fn run(cfg: Config) -> Result<(), AppError> {
    let refused = unsupported(&cfg);
    if !refused.is_empty() {
        return Err(AppError::Unsupported(refused));
    }
    let signals = Signals::install();
    let mut secrets = SecretRegistry::default();
    let pipelines = build_pipelines(&cfg, &mut secrets)?;
    // Secrets are resolved before the first request; failures are retried in the background.
    secrets.resolve_all().await;
    if !cfg.transforms.iter().any(|t| t.name == "allowlist") {
        tracing::warn!("no allowlist transform configured: every destination is allowed");
    }
    let audit = Arc::new(AuditSink::stderr(cfg.log.level));

    let leaf_cache = match cfg.tls.mode {
        TlsMode::Mitm => {
            let (cert, key) = match (&cfg.tls.ca_cert, &cfg.tls.ca_key) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    return Err(AppError::Tls(TlsError::InvalidOption(
                        "tls.ca_cert and tls.ca_key are required".into(),
                    )));
                }
            };
            let ca = CertAuthority::load(cert, key)?;
            let validity = Duration::from_secs(cfg.tls.leaf_cert_expiry_hours.saturating_mul(3600));
            Some(Arc::new(LeafCache::new(
                ca,
                cfg.tls.cert_cache_size.max(1),
                validity,
            )))
        }
        TlsMode::SniOnly => None,
    };

    let upstream_resolver = match &cfg.dns.upstream_resolver {
        Some(a) => Some(a.socket_addr().map_err(AppError::UpstreamResolver)?),
        None => None,
    };
    let resolver = Arc::new(Resolver::new(upstream_resolver)?);
    let deny = DenyList::new(cfg.proxy.effective_deny_cidrs());
    if !deny.nets().is_empty() {
        let cidrs: Vec<String> = deny.nets().iter().map(|n| n.to_string()).collect();
        tracing::info!(cidrs = %cidrs.join(","), "upstream deny list active");
    }
    let proxies = UpstreamProxies::from_env_and_config(&cfg.proxy.upstream_proxy)
        .map_err(|errs| AppError::UpstreamProxy(errs.iter().map(|e| e.to_string()).collect()))?;
    let connector = Connector::new(resolver.clone(), deny, tls::upstream_client_config()?)
        .with_upstream_proxies(proxies);
    // Token mints are the agent's own traffic: same resolver, upstream proxies and roots.
    crate::mint::http::install_connector(&connector);
    let upstream = UpstreamClient::new(
        connector.clone(),
        cfg.proxy.upstream_response_header_timeout.0,
    );

    // Bind everything before serving anything: a port conflict is fatal at startup.
    let dns_sockets = if cfg.dns.enabled {
        Some(accept::bind_dns(&cfg.dns.listen).await?)
    } else {
        None
    };
    let http = accept::bind_tcp("http", &cfg.proxy.http_listen).await?;
    let https = accept::bind_tcp("https", &cfg.proxy.https_listen).await?;
    let metrics = accept::bind_tcp("metrics", &cfg.metrics.listen).await?;
    let tunnel = match &cfg.proxy.tunnel_listen {
        Some(addr) => Some(accept::bind_tcp("tunnel", addr).await?),
        None => None,
    };

    // eBPF interception goes live only once every listener it redirects to is bound.
    let interceptor = if cfg.intercept.enabled() {
        let bound = intercept::Bound {
            http: bound_addr(&http)?,
            https: bound_addr(&https)?,
            dns: dns_sockets.as_ref().and_then(|(u, _)| u.local_addr().ok()),
        };
        Some(intercept::setup(&cfg.intercept, &bound)?)
    } else {
        None
    };

    let rt = Arc::new(Runtime {
        pipelines: ArcSwap::from_pointee(pipelines),
        origins: interceptor
            .clone()
            .map(|i| i as Arc<dyn crate::ebpf::OrigDstLookup>),
        direct_uid_policy: interceptor
            .as_ref()
            .map(|_| intercept::uid_policies(&cfg.intercept)),
        resolver: resolver.clone(),
        upstream,
        connector,
        audit: audit.clone(),
        leaf_cache,
        mode: match cfg.tls.mode {
            TlsMode::Mitm => Mode::Mitm,
            TlsMode::SniOnly => Mode::SniOnly,
        },
        request_body_limit: cfg.proxy.request_body_limit(),
        response_body_limit: cfg.proxy.response_body_limit(),
        websockets: Default::default(),
    });

    let shutdown = CancellationToken::new();
    let pg_deps = crate::postgres::Deps {
        resolver: resolver.clone(),
        audit: audit.clone(),
        origins: rt.origins.clone(),
        env: Arc::new(|k: &str| std::env::var(k).ok()),
        user_names: Arc::new(identity::name_of),
    };
    let postgres =
        crate::postgres::listener::start(&cfg, pg_deps, interceptor.as_deref(), shutdown.clone())
            .await?;

    let describe = rt.pipelines.load().default.describe();
    tracing::info!(
        target: crate::telemetry::STARTUP,
        http_listen = %addr_of(&http),
        https_listen = %addr_of(&https),
        metrics_listen = %addr_of(&metrics),
        tunnel_listen = %tunnel.as_ref().map_or("disabled".to_string(), addr_of),
        dns_listen = %dns_sockets.as_ref().map_or("disabled".to_string(), |(u, _)| u.local_addr().map(|a| a.to_string()).unwrap_or_default()),
        transforms = %describe,
        "iron-agent starting"
    );

    secrets.spawn_refreshers(shutdown.clone());
    let conns = TaskTracker::new();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(named(
        "http",
        server::serve_http(rt.clone(), http, conns.clone(), shutdown.clone()),
    ));
    match rt.mode {
        Mode::Mitm => servers.spawn(named(
            "https",
            server::serve_https(rt.clone(), https, conns.clone(), shutdown.clone()),
        )),
        Mode::SniOnly => servers.spawn(named(
            "https",
            crate::sni::serve_https(rt.clone(), https, conns.clone(), shutdown.clone()),
        )),
    };
    if let Some(tunnel) = tunnel {
        servers.spawn(named(
            "tunnel",
            crate::tunnel::serve(rt.clone(), tunnel, conns.clone(), shutdown.clone()),
        ));
    }
    servers.spawn(named(
        "metrics",
        admin::serve(metrics, audit.clone(), conns.clone(), shutdown.clone()),
    ));
    if let Some((udp, tcp)) = dns_sockets {
        let (dns_cfg, resolver, token) = (cfg.dns.clone(), resolver.clone(), shutdown.clone());
        // In eBPF mode the DNS server answers real addresses, only for names a policy may allow.
        let names = interceptor.as_ref().map(|_| {
            Arc::new(PolicyNames(rt.clone(), postgres.clone())) as Arc<dyn crate::dns::NamePolicy>
        });
        servers.spawn(async move {
            match crate::dns::serve(dns_cfg, udp, tcp, resolver, names, token).await {
                Ok(()) => ("dns", None),
                Err(e) => ("dns", Some(e.to_string())),
            }
        });
    }

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
            tracing::error!(component, error = %reason, "fatal error");
            Err(AppError::Fatal { component, reason })
        }
    };

    shutdown.cancel();
    conns.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
    }
    if let Some(pg) = &postgres {
        pg.sessions().close();
        let _ = tokio::time::timeout(Duration::from_secs(2), pg.sessions().wait()).await;
    }
    servers.abort_all();
    rt.websockets.close(Duration::from_secs(2)).await;
    tracing::info!("iron-agent stopped");
    audit.flush(Duration::from_secs(2));
    result
}

/// Builds the top-level pipeline and one per `intercept.policies` entry.
fn build_pipelines(cfg: &Config, secrets: &mut SecretRegistry) -> Result<PipelineSet, AppError> {
    let default =
        transform::build_pipeline(&cfg.transforms, secrets).map_err(AppError::Pipeline)?;
    let mut policies = Vec::new();
    for p in &cfg.intercept.policies {
        let pipeline =
            transform::build_pipeline(&p.transforms, secrets).map_err(AppError::Pipeline)?;
        policies.push((p.name.clone(), Arc::new(pipeline)));
    }
    Ok(PipelineSet {
        default: Arc::new(default),
        policies,
    })
}

fn bound_addr(l: &tokio::net::TcpListener) -> Result<SocketAddr, AppError> {
    l.local_addr().map_err(|e| AppError::Fatal {
        component: "listener",
        reason: e.to_string(),
    })
}

/// DNS answers in eBPF mode follow the live pipelines, plus the PostgreSQL upstreams (their
/// connections are redirected to the proxy).
struct PolicyNames(Arc<Runtime>, Option<Arc<crate::postgres::PostgresProxy>>);

impl crate::dns::NamePolicy for PolicyNames {
    fn may_allow(&self, host: &str) -> bool {
        self.0.pipelines.load().may_allow_host(host)
            || self.1.as_ref().is_some_and(|pg| {
                let host = crate::policy::normalize_host(host);
                pg.upstream_hosts().contains(&host)
            })
    }
}

async fn named(
    name: &'static str,
    fut: impl std::future::Future<Output = ()>,
) -> (&'static str, Option<String>) {
    fut.await;
    (name, None)
}

fn addr_of(l: &tokio::net::TcpListener) -> String {
    l.local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_default()
}

/// SIGTERM/SIGINT handlers, installed before any listener is announced: a supervisor that
/// signals as soon as it sees the agent up must get a clean shutdown, not the default kill.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Self {
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
