//! The listener and its lifecycle (iron-proxy §21.4). [`PostgresProxy::reconfigure`] applies a
//! new `postgres` block: the new routes, credential and secrets are built first (a bad block
//! leaves the running listener untouched); with the same `listen` address the bound socket is
//! kept and only the configuration it hands to new connections changes; with another address
//! the new socket is bound before the old one is closed. Sessions in flight keep the
//! configuration they started with until they end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{AuthError, Credential};
use super::config::Setting;
use super::redirect::{self, DbRedirects};
use super::session;
use super::sql::Policy;
use crate::accept::{self, BindError};
use crate::audit::AuditSink;
use crate::config::{Config, ListenAddr};
use crate::ebpf::OrigDstLookup;
use crate::resolve::Resolver;
use crate::secrets::{Secret, SecretRegistry, SecretValue};
use crate::tls::{CertAuthority, LeafCache, TlsError};

/// Reads an environment variable (the process environment, or a test's).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The user name of a uid, for audit records of redirected sessions.
pub type NameLookup = Arc<dyn Fn(u32) -> Option<String> + Send + Sync>;

/// What the listener needs from the rest of the agent; unchanged across reconfigurations.
pub struct Deps {
    pub resolver: Arc<Resolver>,
    pub audit: Arc<AuditSink>,
    /// eBPF mode: who opened a redirected connection.
    pub origins: Option<Arc<dyn OrigDstLookup>>,
    /// Reads the client password variable.
    pub env: EnvLookup,
    pub user_names: NameLookup,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: client.password_env {0:?} is not set in the environment")]
    Password(String),
    #[error("postgres.upstreams[{index}].dsn: {reason}")]
    Secret { index: usize, reason: String },
    #[error("postgres.tls: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("postgres: {0}")]
    Credential(#[from] AuthError),
}

/// One route: a database name and how to reach and pin it.
pub struct Route {
    pub database: String,
    pub dsn: Arc<Secret>,
    pub role: Option<String>,
    pub settings: Vec<Setting>,
    pub policy: Policy,
}

/// Everything built from one `postgres` block.
pub struct Generation {
    pub routes: HashMap<String, Arc<Route>>,
    pub credential: Credential,
    /// Client TLS (`postgres.tls`): leaves signed by the agent's CA.
    pub tls: Option<Arc<LeafCache>>,
    pub deps: Arc<Deps>,
    secrets_stop: CancellationToken,
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.secrets_stop.cancel();
    }
}

impl Generation {
    async fn build(cfg: &Config, deps: Arc<Deps>) -> Result<Self, PgError> {
        let pg = &cfg.postgres;
        let var = &pg.client.password_env;
        let password = (deps.env)(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PgError::Password(var.clone()))?;
        let credential =
            Credential::new(&pg.client.user, &SecretValue::new(password), pg.client.auth)?;
        // Counted into the agent's registry, which the shared audit sink carries.
        let metrics = deps.audit.metrics().clone();
        let mut secrets = SecretRegistry::new(metrics.clone());
        let mut routes = HashMap::new();
        for (index, u) in pg.upstreams.iter().enumerate() {
            let src = u.dsn.as_ref().ok_or_else(|| PgError::Secret {
                index,
                reason: "is required".into(),
            })?;
            let dsn = secrets.register(src).map_err(|e| PgError::Secret {
                index,
                reason: e.to_string(),
            })?;
            let route = Route {
                database: u.database.clone(),
                dsn,
                role: u.role.clone().filter(|r| !r.is_empty()),
                settings: u.settings.clone(),
                policy: Policy::new(u.settings.iter().map(|s| s.name.as_str())),
            };
            routes.insert(u.database.clone(), Arc::new(route));
        }
        // A DSN that cannot be read now is retried in the background; sessions for its route
        // fail (08006) until it can, and its eBPF redirect entries wait for a reconfiguration.
        secrets.resolve_all().await;
        let secrets_stop = CancellationToken::new();
        secrets.spawn_refreshers(secrets_stop.clone());
        Ok(Self {
            routes,
            credential,
            tls: client_tls(cfg, metrics)?,
            deps,
            secrets_stop,
        })
    }
}

fn client_tls(
    cfg: &Config,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Option<Arc<LeafCache>>, PgError> {
    if !cfg.postgres.tls {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&cfg.tls.ca_cert, &cfg.tls.ca_key) else {
        return Err(
            TlsError::InvalidOption("tls.ca_cert and tls.ca_key are required".into()).into(),
        );
    };
    let ca = CertAuthority::load(cert, key)?;
    let validity = Duration::from_secs(cfg.tls.leaf_cert_expiry_hours.saturating_mul(3600));
    // PostgreSQL's ALPN id (clients from v17 send it; older ones send none).
    let cache = LeafCache::new(ca, cfg.tls.cert_cache_size.max(1), validity, metrics)
        .with_alpn(vec![b"postgresql".to_vec()]);
    Ok(Some(Arc::new(cache)))
}

struct Active {
    listen: ListenAddr,
    addr: SocketAddr,
    generation: Arc<ArcSwap<Generation>>,
    stop: CancellationToken,
    accept: tokio::task::JoinHandle<()>,
}

impl Active {
    /// Stops accepting and waits until the socket is closed.
    async fn close(self) {
        self.stop.cancel();
        let _ = self.accept.await;
        tracing::info!(addr = %self.addr, "postgres listener stopped");
    }
}

/// The PostgreSQL proxy: at most one listener, reconfigurable while running.
pub struct PostgresProxy {
    deps: Arc<Deps>,
    active: tokio::sync::Mutex<Option<Active>>,
    addr: Mutex<Option<SocketAddr>>,
    hosts: ArcSwap<Vec<String>>,
    redirects: Mutex<Option<Arc<dyn DbRedirects>>>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
}

impl PostgresProxy {
    /// A proxy with no listener yet; [`PostgresProxy::stop`] ends every session.
    pub fn new(deps: Deps) -> Self {
        Self {
            deps: Arc::new(deps),
            active: tokio::sync::Mutex::new(None),
            addr: Mutex::new(None),
            hosts: ArcSwap::from_pointee(Vec::new()),
            redirects: Mutex::new(None),
            sessions: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The bound listener address, if the proxy is enabled.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.addr.lock()
    }

    /// Host names of the configured upstreams (eBPF mode: the DNS server answers them).
    pub fn upstream_hosts(&self) -> Arc<Vec<String>> {
        self.hosts.load_full()
    }

    /// Sessions in flight.
    pub fn sessions(&self) -> &TaskTracker {
        &self.sessions
    }

    /// Agent shutdown: stops accepting, ends every session (each writes its record) and waits
    /// up to `grace` for them.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.sessions.close();
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("postgres: sessions still open after the shutdown grace period");
        }
    }

    /// eBPF mode: from now on, keep the kernel's redirect entries in step with the config.
    pub async fn attach_redirects(&self, table: Arc<dyn DbRedirects>) {
        *self.redirects.lock() = Some(table);
        self.sync_redirects().await;
    }

    /// Applies `cfg.postgres` (the first call starts the listener). On error the previous
    /// listener, if any, keeps running with its previous configuration.
    pub async fn reconfigure(&self, cfg: &Config) -> Result<(), PgError> {
        let mut active = self.active.lock().await;
        if cfg.postgres.is_disabled() {
            if let Some(old) = active.take() {
                old.close().await;
            }
            *self.addr.lock() = None;
            self.hosts.store(Arc::new(Vec::new()));
            drop(active);
            self.sync_redirects().await;
            return Ok(());
        }
        let shared = Generation::build(cfg, self.deps.clone()).await?;
        let listen = cfg
            .postgres
            .listen
            .clone()
            .unwrap_or_else(|| ListenAddr::any(5432));
        match active.as_ref() {
            Some(old) if old.listen == listen => {
                old.generation.store(Arc::new(shared));
                tracing::info!(addr = %old.addr, "postgres listener reloaded");
            }
            _ => {
                let listener = accept::bind_tcp("postgres", &listen).await?;
                let addr = listener.local_addr().map_err(|e| BindError::Bind {
                    listener: "postgres",
                    addr: listen.to_string(),
                    source: e,
                })?;
                let generation = Arc::new(ArcSwap::from_pointee(shared));
                let stop = CancellationToken::new();
                let accept =
                    tokio::spawn(self.accept_loop(listener, generation.clone(), stop.clone()));
                let new = Active {
                    listen,
                    addr,
                    generation,
                    stop,
                    accept,
                };
                if let Some(old) = active.replace(new) {
                    old.close().await;
                }
                *self.addr.lock() = Some(addr);
                tracing::info!(addr = %addr, upstreams = cfg.postgres.upstreams.len(), "postgres proxy starting");
            }
        }
        let hosts = active
            .as_ref()
            .map(|a| redirect::upstream_hosts(&a.generation.load()))
            .unwrap_or_default();
        self.hosts.store(Arc::new(hosts));
        drop(active);
        self.sync_redirects().await;
        Ok(())
    }

    fn accept_loop(
        &self,
        listener: TcpListener,
        generation: Arc<ArcSwap<Generation>>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let sessions = self.sessions.clone();
        let shutdown = self.shutdown.clone();
        async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((tcp, peer)) => {
                        let shared = generation.load_full();
                        sessions.spawn(session::serve(shared, tcp, peer, shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(listener = "postgres", error = %e, "accept error");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    /// Writes the kernel redirect entries for the upstreams as their DSNs read and resolve now
    /// (eBPF mode only); called on start and reconfiguration, not when a DSN is refreshed.
    async fn sync_redirects(&self) {
        let table = self.redirects.lock().clone();
        let Some(table) = table else { return };
        let (addr, dests) = {
            let active = self.active.lock().await;
            match active.as_ref() {
                Some(a) => {
                    let shared = a.generation.load_full();
                    (
                        Some(a.addr),
                        redirect::destinations(&shared, &self.deps.resolver).await,
                    )
                }
                None => (None, Vec::new()),
            }
        };
        if let Err(e) = table.set(addr, &dests) {
            // Fail closed: without the entries governed clients are denied, not let through.
            tracing::error!(error = %e, "postgres: writing eBPF redirect entries failed");
        }
    }
}

/// The app's hook: starts the proxy when `cfg.postgres` is enabled (binding is fatal at
/// startup, like every listener), wiring the eBPF redirect entries when interception is on.
/// With `standby` (managed mode, upstreams to come from the control plane) the proxy exists
/// without a listener until a sync enables it.
pub async fn start(
    cfg: &Config,
    deps: Deps,
    interceptor: Option<&Arc<crate::ebpf::Interceptor>>,
    standby: bool,
) -> Result<Option<Arc<PostgresProxy>>, PgError> {
    if cfg.postgres.is_disabled() && !standby {
        return Ok(None);
    }
    let proxy = Arc::new(PostgresProxy::new(deps));
    proxy.reconfigure(cfg).await?;
    if let Some(icpt) = interceptor {
        match crate::ebpf::DbRedirectTable::open(icpt.pin_dir()) {
            Ok(redirects) => {
                let tables = redirect::KernelTables {
                    redirects,
                    interceptor: icpt.clone(),
                };
                proxy.attach_redirects(Arc::new(tables)).await
            }
            Err(e) => tracing::error!(error = %e, "postgres: eBPF redirect table unavailable"),
        }
    }
    Ok(Some(proxy))
}
