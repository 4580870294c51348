//! Reload: the whole policy state rebuilt from the config file and swapped in at once, or
//! nothing changed. Triggered by `POST /v1/reload` ([`super::management`]) or SIGHUP.
//!
//! A reload re-reads the file, re-applies the `IRON_*` overrides, validates, refuses changed
//! settings that are fixed at start ([`diff::fixed_changes`]), rebuilds every identity
//! profile (policy, pipeline, MCP policy and gateway) with freshly resolved secret sources,
//! and only then commits: PostgreSQL proxy, profiles, the eBPF policy maps, the secret
//! refreshers. Direct connections to the agent's listeners need no commit of their own: they
//! are identified from the kernel's per-socket records, which carry the policy id the maps
//! held at connect time. A kernel map update that fails puts the previous profiles, maps and
//! PostgreSQL block back. Requests already running keep the profile they read; connections
//! are never closed.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::management::Management;
use super::reload_diff::{self as diff, config_hash};
use super::reload_kernel as kernel;
use super::serve::Ended;
use crate::accept::BindError;
use crate::config::{self, Config};
use crate::ebpf::Interceptor;
use crate::managed::postgres::Base as PgBase;
use crate::mint::TokenHttp;
use crate::postgres::{PgError, PostgresProxy};
use crate::proxy::Runtime;
use crate::secrets::SecretRegistry;

/// Why a reload was refused; the old state is kept either way.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config does not load, validate or build (API: 422 with this message).
    #[error("{0}")]
    Invalid(String),
    /// Something outside the config failed while applying it (API: 500).
    #[error("{0}")]
    Internal(String),
}

/// A reload that was applied.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub config_hash: String,
    /// Reloadable sections that differ from the previous config (may be empty: secret sources
    /// are re-resolved anyway).
    pub changed: Vec<String>,
}

/// What asked for the reload (logged).
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Api,
    Sighup,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Sighup => "SIGHUP",
        }
    }
}

/// The config generation in force.
struct Generation {
    cfg: Config,
    hash: String,
    /// Stops this generation's secret refreshers once a newer one is in force.
    refreshers: CancellationToken,
}

/// Rebuilds and swaps the policy state of a running agent. Reloads (and managed-mode syncs)
/// are serialised.
pub struct Reloader {
    /// The `--config` file; `None` (embedded default config) cannot be reloaded.
    source: Option<PathBuf>,
    /// Managed mode: the pipeline comes from the control plane ([`Reloader::apply_sync`]);
    /// file reloads are unavailable.
    managed: bool,
    rt: Arc<Runtime>,
    mint: Arc<TokenHttp>,
    interceptor: Option<Arc<Interceptor>>,
    postgres: Option<Arc<PostgresProxy>>,
    /// Managed mode: what synced PostgreSQL upstreams are layered onto.
    pg_base: PgBase,
    current: tokio::sync::Mutex<Generation>,
    /// Parent of every generation's refresher token; cancelled at shutdown.
    root: CancellationToken,
    /// The startup secrets and their token, until [`Control::spawn`] starts their refreshers.
    initial_secrets: std::sync::Mutex<Option<(SecretRegistry, CancellationToken)>>,
}

/// Everything the app hands over at startup.
pub struct Parts {
    pub source: Option<PathBuf>,
    pub managed: bool,
    pub cfg: Config,
    pub rt: Arc<Runtime>,
    pub mint: Arc<TokenHttp>,
    pub secrets: SecretRegistry,
    pub interceptor: Option<Arc<Interceptor>>,
    pub postgres: Option<Arc<PostgresProxy>>,
    pub pg_base: PgBase,
}

impl Reloader {
    pub fn new(p: Parts) -> Self {
        // The startup config's hash: from the file when there is one, as a reload computes it.
        // Managed mode starts with none: the control plane's hash names what is in force.
        let hash = p
            .source
            .as_ref()
            .filter(|_| !p.managed)
            .and_then(|s| std::fs::read_to_string(s).ok())
            .map(|t| config_hash(&t))
            .unwrap_or_default();
        p.rt.metrics.set_config_hash(&hash);
        let root = CancellationToken::new();
        let refreshers = root.child_token();
        Self {
            source: p.source,
            managed: p.managed,
            rt: p.rt,
            mint: p.mint,
            interceptor: p.interceptor,
            postgres: p.postgres,
            pg_base: p.pg_base,
            current: tokio::sync::Mutex::new(Generation {
                cfg: p.cfg,
                hash,
                refreshers: refreshers.clone(),
            }),
            initial_secrets: std::sync::Mutex::new(Some((p.secrets, refreshers))),
            root,
        }
    }

    /// The hash of the config in force (`""` for the embedded default config).
    pub async fn config_hash(&self) -> String {
        self.current.lock().await.hash.clone()
    }

    /// Whether the pipeline comes from a control plane (no file reloads).
    pub fn is_managed(&self) -> bool {
        self.managed
    }

    /// Reloads from the config file. On error nothing changed.
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        if self.managed {
            let e = ReloadError::Invalid("reload is unavailable in managed mode".into());
            tracing::warn!(trigger = trigger.as_str(), error = %e, "config reload refused");
            return Err(e);
        }
        let mut current = self.current.lock().await;
        let result = self.rebuild_and_swap(&mut current).await;
        finished(&self.rt.metrics, trigger, &result, &current.hash);
        result
    }

    async fn rebuild_and_swap(&self, cur: &mut Generation) -> Result<Reloaded, ReloadError> {
        let Some(path) = &self.source else {
            return Err(ReloadError::Invalid(
                "no config file to re-read (the agent runs the embedded default config)".into(),
            ));
        };
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ReloadError::Invalid(format!("reading {}: {e}", path.display())))?;
        let hash = config_hash(&text);
        let cfg = config::load_str(&text, &|k| std::env::var(k).ok())
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let refused = crate::check::unsupported(&cfg);
        if !refused.is_empty() {
            return Err(ReloadError::Invalid(refused.join("\n")));
        }
        let fixed = diff::fixed_changes(&cur.cfg, &cfg, self.postgres.is_some());
        if !fixed.is_empty() {
            return Err(ReloadError::Invalid(format!(
                "settings fixed at start cannot change on reload (restart the agent to apply them): {}",
                fixed.join(", ")
            )));
        }
        if self.interceptor.is_some() {
            kernel::check_identities(&cfg).map_err(ReloadError::Invalid)?;
        }
        super::warn_if_learning(&cfg);
        self.commit(cur, cfg, hash).await
    }

    /// Managed mode: applies what a sync answer changes (the top-level pipeline, the MCP
    /// policy, the synced PostgreSQL upstreams) to the config in force, through the same build-then-swap as a file reload.
    /// On error nothing changed, and the hash in force stays the old one.
    pub async fn apply_sync(
        &self,
        synced: crate::managed::apply::Synced,
        hash: String,
    ) -> Result<Reloaded, ReloadError> {
        let mut current = self.current.lock().await;
        let mut cfg = current.cfg.clone();
        if let Some(t) = synced.transforms {
            cfg.transforms = t;
        }
        if let Some(m) = synced.mcp {
            cfg.mcp = m;
        }
        if let Some(upstreams) = synced.postgres {
            if self.pg_base.is_none() && !upstreams.is_empty() {
                tracing::info!(
                    "the sync carries postgres upstreams; ignored: no local postgres block and IRON_PROXY_PG_LISTEN, IRON_PROXY_PG_CLIENT_USER, IRON_PROXY_PG_CLIENT_PASSWORD not all set"
                );
            }
            cfg.postgres = self.pg_base.layer(&upstreams);
        }
        let result = self.commit(&mut current, cfg, hash).await;
        // A rejection is logged by the poller, with the reasons found before the build.
        if let Ok(r) = &result {
            self.rt.metrics.set_config_hash(&r.config_hash);
            tracing::info!(
                config_hash = %r.config_hash,
                changed = %r.changed.join(", "),
                "config applied from control plane"
            );
        }
        result
    }

    /// Builds every profile of `cfg` and swaps it in with the kernel maps and the PostgreSQL
    /// proxy, or changes nothing.
    async fn commit(
        &self,
        cur: &mut Generation,
        cfg: Config,
        hash: String,
    ) -> Result<Reloaded, ReloadError> {
        let mut secrets = SecretRegistry::new(self.rt.metrics.clone());
        let profiles = super::build_profiles(&cfg, &mut secrets, &self.mint, &self.rt.metrics)
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        // Fresh resolution: a rotated credential behind a source is picked up by the reload.
        secrets.resolve_all().await;
        let changed = diff::reloadable_changes(&cur.cfg, &cfg);
        let pg_changed = changed.iter().any(|c| c == "postgres");
        // The PostgreSQL proxy first: binding a changed address can fail for reasons outside
        // the config, and nothing else has changed yet.
        if let Some(pg) = &self.postgres
            && pg_changed
        {
            pg.reconfigure(&cfg).await.map_err(postgres_error)?;
        }
        // Commit. The profiles go first, so a policy id the kernel starts reporting names a
        // profile that exists.
        let old_profiles = self.rt.profiles.swap(Arc::new(profiles));
        if let Some(icpt) = &self.interceptor
            && let Err(e) = kernel::apply(icpt, &cfg.intercept)
        {
            // Put everything back, so "previous config kept" is true: the old profiles, the
            // old generation's kernel entries (which also prunes the new ones written so far)
            // and the old PostgreSQL block.
            self.rt.profiles.store(old_profiles);
            if let Err(e) = kernel::apply(icpt, &cur.cfg.intercept) {
                tracing::error!(error = %e, "restoring the eBPF policy maps after a failed reload");
            }
            if let Some(pg) = &self.postgres
                && pg_changed
                && let Err(e) = pg.reconfigure(&cur.cfg).await
            {
                tracing::error!(error = %e, "restoring the postgres proxy after a failed reload");
            }
            return Err(ReloadError::Internal(format!(
                "updating eBPF policy maps: {e}"
            )));
        }
        let refreshers = self.root.child_token();
        secrets.spawn_refreshers(refreshers.clone());
        let old = std::mem::replace(
            cur,
            Generation {
                cfg,
                hash: hash.clone(),
                refreshers,
            },
        );
        old.refreshers.cancel();
        Ok(Reloaded {
            config_hash: hash,
            changed,
        })
    }
}

/// A PostgreSQL proxy that cannot take the new block: its listener failing to bind (address in
/// use, permission) is outside the config (500); anything else is the block itself (422).
fn postgres_error(e: PgError) -> ReloadError {
    match e {
        PgError::Bind(BindError::Bind { .. }) => ReloadError::Internal(e.to_string()),
        _ => ReloadError::Invalid(e.to_string()),
    }
}

/// The one place a reload's result is known: logs it and counts it in the metrics.
fn finished(
    metrics: &crate::metrics::Metrics,
    trigger: Trigger,
    result: &Result<Reloaded, ReloadError>,
    in_force: &str,
) {
    match result {
        Ok(r) => metrics.record_reload(true, &r.config_hash),
        Err(_) => metrics.record_reload(false, in_force),
    }
    match result {
        Ok(r) => {
            let changed = if r.changed.is_empty() {
                "nothing (secret sources re-resolved)".to_string()
            } else {
                r.changed.join(", ")
            };
            tracing::info!(
                trigger = trigger.as_str(),
                config_hash = %r.config_hash,
                changed = %changed,
                "config reloaded"
            );
        }
        Err(e) => tracing::warn!(
            trigger = trigger.as_str(),
            config_hash = %in_force,
            error = %e,
            "config reload failed; previous config kept"
        ),
    }
}

/// The reload machinery handed to `serve`: the reloader, the management API listener and the
/// SIGHUP handler.
pub struct Control {
    pub reloader: Arc<Reloader>,
    pub management: Option<Management>,
    pub hangup: Hangup,
    /// Managed mode: the sync loop and the state it shares with the management API.
    pub managed: Option<(super::sync::Poller, Arc<crate::managed::State>)>,
}

impl Control {
    /// Starts the startup secrets' refreshers, the management API and the SIGHUP loop; each
    /// ends with `shutdown`.
    pub(super) fn spawn(
        self,
        servers: &mut JoinSet<Ended>,
        conns: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let initial = self
            .reloader
            .initial_secrets
            .lock()
            .ok()
            .and_then(|mut s| s.take());
        if let Some((secrets, token)) = initial {
            secrets.spawn_refreshers(token);
        }
        let (root, s) = (self.reloader.root.clone(), shutdown.clone());
        tokio::spawn(async move {
            s.cancelled().await;
            root.cancel();
        });
        let state = self.managed.as_ref().map(|(_, st)| st.clone());
        if let Some(m) = self.management {
            let (c, s, r) = (conns.clone(), shutdown.clone(), self.reloader.clone());
            servers.spawn(async move {
                m.serve(r, state, c, s).await;
                ("management", None)
            });
        }
        if let Some((poller, _)) = self.managed {
            let s = shutdown.clone();
            servers.spawn(async move {
                match poller.run(s).await {
                    Ok(()) => ("control_plane", None),
                    Err(e) => ("control_plane", Some(e.to_string())),
                }
            });
        }
        let (r, s) = (self.reloader, shutdown.clone());
        servers.spawn(async move {
            self.hangup.serve(r, s).await;
            ("sighup", None)
        });
    }
}

/// The SIGHUP handler, installed at startup (before any listener is announced: the default
/// action of SIGHUP would kill the agent).
pub struct Hangup(Option<tokio::signal::unix::Signal>);

impl Hangup {
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Hangup(signal(SignalKind::hangup()).ok())
    }

    /// Reloads on every SIGHUP until `shutdown`.
    async fn serve(self, reloader: Arc<Reloader>, shutdown: CancellationToken) {
        let Some(mut sig) = self.0 else {
            shutdown.cancelled().await;
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = sig.recv() => if got.is_none() {
                    shutdown.cancelled().await;
                    return;
                },
            }
            // Errors are logged by the reloader; a bad file leaves the agent as it was.
            let _ = reloader.reload(Trigger::Sighup).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_bind_failure_is_internal_and_a_bad_block_invalid() {
        let bind = PgError::Bind(BindError::Bind {
            listener: "postgres",
            addr: "127.0.0.1:5432".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
        assert!(matches!(postgres_error(bind), ReloadError::Internal(_)));
        let addr = PgError::Bind(BindError::Addr {
            listener: "postgres",
            addr: "nowhere".into(),
            reason: "not an address".into(),
        });
        assert!(matches!(postgres_error(addr), ReloadError::Invalid(_)));
        let password = PgError::Password("PG_PROXY_PASSWORD".into());
        assert!(matches!(postgres_error(password), ReloadError::Invalid(_)));
    }
}
