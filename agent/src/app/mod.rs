//! Wiring: build the runtime from a validated config, bind every listener, serve until a
//! signal or a fatal error, then drain. [`run`] reads as its steps; serving and shutdown are
//! in [`serve`].

pub mod admin;
pub mod default;
pub mod identity;
pub mod intercept;
pub mod jail;
mod jail_ready;
pub mod management;
pub mod preflight;
pub mod reload;
mod reload_diff;
mod reload_kernel;
mod serve;
pub mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::accept::BindError;
use crate::audit::AuditSink;
use crate::config::{Config, TlsConfig, TlsMode};
use crate::ebpf::Interceptor;
use crate::identify::{ConnIdentifier, OrigDstLookup, Uid, UserNames};
use crate::managed::postgres::Base as PgBase;
use crate::metrics::{Health, Metrics};
use crate::mint::TokenHttp;
use crate::proxy::{Profile, Profiles, Runtime};
use crate::resolve::{ResolveError, Resolver};
use crate::secrets::SecretRegistry;
use crate::tls::{self, CertAuthority, LeafCache, TlsError};
use crate::transform::{BuildContext, BuildError, Mode};
use crate::upstream::proxy::ProxyConfigError;
use crate::upstream::{Connector, DenyList, UpstreamClient, UpstreamProxies};

use identity::Users;
use serve::{Listeners, Signals};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("building transform pipeline:\n{}", join(.0))]
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
    #[error("{}", join(.0))]
    UpstreamProxy(Vec<ProxyConfigError>),
    #[error("{0}")]
    Postgres(#[from] crate::postgres::PgError),
    #[error("{0}")]
    Otel(#[from] crate::audit::otel::OtelError),
    #[error("fatal error: {component}: {reason}")]
    Fatal {
        component: &'static str,
        reason: String,
    },
}

fn join<E: std::fmt::Display>(errs: &[E]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the agent until SIGINT/SIGTERM (Ok) or a fatal error (Err). `source` is the
/// `--config` file, re-read by a reload (`None`: the embedded default config). With
/// `managed` settings the top-level pipeline comes from the control plane instead. The one
/// [`Metrics`] registry is created here and handed to everything that counts.
pub async fn run(
    mut cfg: Config,
    source: Option<PathBuf>,
    managed: Option<crate::managed::Settings>,
) -> Result<(), AppError> {
    ignore_local_pipeline(&mut cfg, managed.is_some());
    warn_if_learning(&cfg);
    let refused = crate::check::unsupported(&cfg);
    if !refused.is_empty() {
        return Err(AppError::Unsupported(refused));
    }
    management::Management::require_source(&cfg, source.as_deref(), managed.is_some())?;
    let signals = Signals::install();
    let hangup = reload::Hangup::install();
    let metrics = Arc::new(Metrics::new());
    let audit = start_audit(&cfg, &metrics)?;
    // Serving /healthz (and /readyz: 503) from here on, while the rest starts.
    let admin =
        admin::Admin::start(&cfg.metrics.listen, health(managed.is_some()), &metrics).await?;
    let upstream = Upstream::build(&cfg)?;
    let (profiles, secrets) = first_profiles(&cfg, managed.is_some(), &upstream.mint, &metrics)?;
    admin.health.pipeline_built();
    // Secrets are resolved before the first request; failures are retried in the background.
    secrets.resolve_all().await;
    let leaf_cache = leaf_cache(&cfg.tls, &metrics)?;
    // Bind everything before serving anything: a port conflict is fatal at startup.
    let listeners = Listeners::bind(&cfg).await?;
    let management = management::Management::bind(&cfg).await?;
    // eBPF interception goes live only once every listener it redirects to is bound. A first
    // start that fails after this point takes its programs away again.
    let first_start = FirstStart::arm(&cfg);
    let others = OtherListeners {
        management: management.as_ref().and_then(|m| m.addr()),
        metrics: admin.addr(),
    };
    let interceptor = attach_interception(&cfg, &listeners, others)?;
    admin::export_kernel_counters(&metrics, interceptor.as_ref());
    let rt = Arc::new(Runtime {
        profiles: ArcSwap::from_pointee(profiles),
        identify: identifier(interceptor.clone()),
        users: Arc::new(Passwd(Users::load())),
        resolver: upstream.resolver,
        upstream: upstream.client,
        connector: upstream.connector,
        audit,
        metrics,
        leaf_cache,
        mode: mode_of(cfg.tls.mode),
        request_body_limit: cfg.proxy.request_body_limit(),
        response_body_limit: cfg.proxy.response_body_limit(),
        websockets: Default::default(),
        conn_limits: conn_limits(&cfg),
    });
    let pg_base = pg_base(&cfg, managed.is_some())?;
    let postgres = start_postgres(&cfg, &rt, interceptor.as_ref(), &pg_base).await?;
    listeners.log_startup(&rt, admin.addr());
    let ebpf = interceptor.is_some();
    let reloader = Arc::new(reload::Reloader::new(reload::Parts {
        source,
        managed: managed.is_some(),
        cfg: cfg.clone(),
        rt: rt.clone(),
        mint: upstream.mint.clone(),
        secrets,
        interceptor,
        postgres: postgres.clone(),
        pg_base,
    }));
    let control = reload::Control {
        managed: managed
            .map(|m| sync::Poller::new(m, &upstream.mint, &reloader, &admin.health, &rt.audit)),
        reloader,
        management,
        hangup,
    };
    first_start.disarm();
    serve::serve(&cfg, rt, listeners, ebpf, control, signals, postgres, admin).await
}

fn conn_limits(cfg: &Config) -> Arc<crate::proxy::limits::ConnLimits> {
    crate::proxy::limits::ConnLimits::new(
        cfg.proxy.max_connections,
        cfg.proxy.max_connections_per_client,
    )
}

/// The audit writer (stderr) with OTEL export when the environment configures it; failing to
/// start the writer is a startup error, never a silent no-op.
fn start_audit(cfg: &Config, metrics: &Arc<Metrics>) -> Result<Arc<AuditSink>, AppError> {
    let otel = crate::audit::otel::OtelExport::from_env(&|k: &str| std::env::var(k).ok(), metrics)?;
    let fatal = |e: std::io::Error| AppError::Fatal {
        component: "audit",
        reason: format!("starting the audit writer: {e}"),
    };
    let mut sink = AuditSink::stderr(cfg.log.level, metrics.clone()).map_err(fatal)?;
    if let Some(path) = &cfg.log.audit_copy {
        use std::os::unix::fs::OpenOptionsExt as _;
        // create_new: never write through a file (or link) someone else put there.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| AppError::Fatal {
                component: "audit",
                reason: format!("creating {}: {e}", path.display()),
            })?;
        sink = sink.with_copy(Box::new(file)).map_err(fatal)?;
    }
    Ok(Arc::new(sink.with_otel(otel)))
}

/// Learn mode lets through what the policy would deny: said loudly, once per allowlist.
fn warn_if_learning(cfg: &Config) {
    for field in crate::config::validate::learning(cfg) {
        tracing::warn!(
            target: crate::telemetry::STARTUP,
            field = %field,
            "LEARNING MODE: this allowlist is NOT enforced; every request it would deny is allowed, \
             forwarded and recorded with learn: would_deny (secrets and upstream_deny_cidrs still apply)"
        );
    }
}

/// Managed mode: the top-level pipeline comes from the control plane; the YAML one is dropped
/// (said once at startup).
fn ignore_local_pipeline(cfg: &mut Config, managed: bool) {
    if managed && !cfg.transforms.is_empty() {
        tracing::warn!(
            count = cfg.transforms.len(),
            "managed mode: the YAML `transforms` are ignored; the pipeline comes from the control plane"
        );
        cfg.transforms.clear();
    }
}

/// Managed mode is not ready until its first sync; standalone has nothing to sync.
fn health(managed: bool) -> Health {
    if managed {
        Health::default()
    } else {
        Health::standalone()
    }
}

/// The profiles at startup and the secrets they read. Managed mode: nothing is judged until
/// the first sync (every connection gets 503).
fn first_profiles(
    cfg: &Config,
    managed: bool,
    mint: &Arc<TokenHttp>,
    metrics: &Arc<Metrics>,
) -> Result<(Profiles, SecretRegistry), AppError> {
    let mut secrets = SecretRegistry::new(metrics.clone());
    let profiles = if managed {
        Profiles::not_ready()
    } else {
        build_profiles(cfg, &mut secrets, mint, metrics)?
    };
    Ok((profiles, secrets))
}

fn mode_of(mode: TlsMode) -> Mode {
    match mode {
        TlsMode::Mitm => Mode::Mitm,
        TlsMode::SniOnly => Mode::SniOnly,
    }
}

/// Pins a first start created: removed (detaching the programs) when the start fails before
/// serving, so a failed first start leaves every user's network as it found it. Pins from an
/// earlier good start are not ours to remove: they stay and keep failing closed.
struct FirstStart(Option<std::path::PathBuf>);

impl FirstStart {
    fn arm(cfg: &Config) -> Self {
        let pin_dir = &cfg.intercept.pin_dir;
        let fresh = cfg.intercept.enabled() && !crate::ebpf::is_installed(pin_dir);
        Self(fresh.then(|| pin_dir.clone()))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FirstStart {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && dir.exists()
        {
            match crate::install::detach(&dir) {
                Ok(done) => tracing::info!(pin_dir = %dir.display(), "start failed: {done}"),
                Err(e) => {
                    tracing::error!(pin_dir = %dir.display(), error = %e, "start failed and its programs could not be detached; run `iron-agent detach`")
                }
            }
        }
    }
}

/// The PostgreSQL proxy's listener when `postgres` is configured (binding is fatal at startup,
/// like every listener); it shares the resolver, audit sink and eBPF lookups of the runtime.
async fn start_postgres(
    cfg: &Config,
    rt: &Arc<Runtime>,
    interceptor: Option<&Arc<Interceptor>>,
    base: &PgBase,
) -> Result<Option<Arc<crate::postgres::PostgresProxy>>, AppError> {
    let users = rt.users.clone();
    let deps = crate::postgres::Deps {
        resolver: rt.resolver.clone(),
        audit: rt.audit.clone(),
        origins: interceptor.map(|i| i.clone() as Arc<dyn OrigDstLookup>),
        env: Arc::new(|k: &str| std::env::var(k).ok()),
        user_names: Arc::new(move |uid: u32| users.name_of(Uid(uid))),
    };
    let standby = matches!(base, PgBase::Env(_));
    Ok(crate::postgres::listener::start(cfg, deps, interceptor, standby).await?)
}

/// Managed mode: what synced PostgreSQL upstreams will be layered onto (iron-proxy §21.5).
fn pg_base(cfg: &Config, managed: bool) -> Result<PgBase, AppError> {
    if !managed {
        return Ok(PgBase::None);
    }
    PgBase::resolve(&cfg.postgres, &|k: &str| std::env::var(k).ok()).map_err(|e| AppError::Fatal {
        component: "postgres",
        reason: e.to_string(),
    })
}

/// The top-level profile and one per `intercept.policies` entry: each a policy (its
/// allowlists), a pipeline and the MCP policy. Credential transforms mint tokens through
/// `mint`. Used at startup and by every reload.
/// Every identity profile of `cfg` (the top-level list and each `intercept.policies` entry),
/// built as the agent builds them; `iron-agent policy test` builds them the same way with a
/// detached token client.
pub fn build_profiles(
    cfg: &Config,
    secrets: &mut SecretRegistry,
    mint: &Arc<TokenHttp>,
    metrics: &Arc<Metrics>,
) -> Result<Profiles, AppError> {
    let mcp = crate::mcp::Mcp::build(cfg.mcp.as_ref(), cfg.mcp_gateway.as_ref(), secrets)
        .map_err(|e| AppError::Unsupported(vec![e.to_string()]))?
        .map(Arc::new);
    let mut cx = BuildContext::new(secrets, mint);
    let mut default = Profile::build(None, &cfg.transforms, &mut cx).map_err(AppError::Pipeline)?;
    if default.policy.allows_everything() {
        tracing::warn!("no allowlist transform configured: every destination is allowed");
    }
    default.mcp = mcp.clone();
    let mut policies = Vec::new();
    for p in &cfg.intercept.policies {
        let name = Some(p.name.clone().unwrap_or_default());
        let mut profile =
            Profile::build(name, &p.transforms, &mut cx).map_err(AppError::Pipeline)?;
        profile.mcp = mcp.clone();
        profile.budget = p.budget.map(|b| {
            Arc::new(crate::policy::budget::Budget::new(
                b,
                p.name.clone().unwrap_or_default(),
                metrics.clone(),
            ))
        });
        policies.push(profile);
    }
    Ok(Profiles::new(default, policies))
}

/// The resolver, the connector (deny list, upstream proxies, TLS roots), the pooled client and
/// the token client built on the same connector.
struct Upstream {
    resolver: Arc<Resolver>,
    connector: Connector,
    client: UpstreamClient,
    mint: Arc<TokenHttp>,
}

impl Upstream {
    fn build(cfg: &Config) -> Result<Self, AppError> {
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
            .map_err(AppError::UpstreamProxy)?;
        let connector = Connector::new(resolver.clone(), deny, tls::upstream_client_config()?)
            .with_upstream_proxies(proxies);
        // Token mints are the agent's own traffic: same resolver, upstream proxies and roots.
        let mint = Arc::new(TokenHttp::new(&connector));
        let timeout = cfg.proxy.upstream_response_header_timeout.0;
        Ok(Self {
            client: UpstreamClient::new(connector.clone(), timeout),
            mint,
            resolver,
            connector,
        })
    }
}

/// MITM mode: the CA and the leaf cache. sni-only mode terminates no TLS.
fn leaf_cache(cfg: &TlsConfig, metrics: &Arc<Metrics>) -> Result<Option<Arc<LeafCache>>, AppError> {
    if cfg.mode == TlsMode::SniOnly {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&cfg.ca_cert, &cfg.ca_key) else {
        return Err(AppError::Tls(TlsError::InvalidOption(
            "tls.ca_cert and tls.ca_key are required".into(),
        )));
    };
    let ca = CertAuthority::load(cert, key)?;
    let validity = Duration::from_secs(cfg.leaf_cert_expiry_hours.saturating_mul(3600));
    let size = cfg.cert_cache_size.max(1);
    Ok(Some(Arc::new(LeafCache::new(
        ca,
        size,
        validity,
        metrics.clone(),
    ))))
}

/// Bound listeners outside [`Listeners`] that governed tasks must not squat either.
struct OtherListeners {
    management: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

/// Loads (or adopts) the eBPF programs when `intercept` is configured.
fn attach_interception(
    cfg: &Config,
    listeners: &Listeners,
    others: OtherListeners,
) -> Result<Option<Arc<Interceptor>>, AppError> {
    if !cfg.intercept.enabled() {
        return Ok(None);
    }
    // The PostgreSQL proxy binds later; its configured port is reserved from the start (the
    // proxy then keeps its entry in step with the address it is bound to).
    let postgres = (!cfg.postgres.is_disabled())
        .then(|| cfg.postgres.listen.as_ref()?.socket_addr().ok())
        .flatten();
    let bound = intercept::Bound {
        http: listeners.http_addr()?,
        https: listeners.https_addr()?,
        dns: listeners.dns_addr(),
        tunnel: listeners.tunnel_addr(),
        management: others.management,
        metrics: others.metrics,
        postgres,
    };
    let state = default::state_dir(&|k| std::env::var(k).ok());
    let protect = intercept::protected_paths(cfg, &state);
    Ok(Some(intercept::setup(&cfg.intercept, &bound, protect)?))
}

/// The connection-level identify step: eBPF lookups when interception is attached.
fn identifier(interceptor: Option<Arc<Interceptor>>) -> ConnIdentifier {
    match interceptor {
        Some(i) => ConnIdentifier::ebpf(i as Arc<dyn OrigDstLookup>),
        None => ConnIdentifier::off(),
    }
}

/// User names for audit records, from the passwd table read at startup (in memory; an unknown
/// uid schedules a background re-read).
struct Passwd(Arc<Users>);

impl UserNames for Passwd {
    fn name_of(&self, uid: Uid) -> Option<String> {
        self.0.name_of(uid.0).map(|n| n.to_string())
    }
}

fn bound_addr(l: &tokio::net::TcpListener) -> Result<SocketAddr, AppError> {
    l.local_addr().map_err(|e| AppError::Fatal {
        component: "listener",
        reason: e.to_string(),
    })
}
