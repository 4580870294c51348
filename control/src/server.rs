//! `iron-control serve`: settings, startup (database, migrations, bootstrap key, listener),
//! the refresh loop, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::{self, LoopOptions};
use crate::crypto::{CryptoError, Keyring};
use crate::db::{Db, DbError};
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Key(#[from] CryptoError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Resolved settings of one `serve` (flags > environment > defaults; see main.rs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub state_dir: PathBuf,
    /// Base64 of 32 bytes; None: generated once into `<state_dir>/secret.key`.
    pub secret_key: Option<String>,
    pub previous_keys: Vec<String>,
    pub refresh: LoopOptions,
    pub max_connections: u32,
    /// Audit ingest: ring size, body limit, forwarding.
    pub audit: crate::ingest::Settings,
}

impl Settings {
    pub fn keyring(&self) -> Result<Keyring, CryptoError> {
        match &self.secret_key {
            Some(k) => Keyring::from_base64(k, &self.previous_keys),
            None => Keyring::load_or_create_file(
                &self.state_dir.join("secret.key"),
                &self.previous_keys,
            ),
        }
    }
}

pub async fn open(settings: &Settings) -> Result<Db, ServeError> {
    if settings.database_url.starts_with("sqlite:") || settings.secret_key.is_none() {
        create_private_dir(&settings.state_dir)?;
    }
    let db = Db::connect(&settings.database_url, settings.max_connections).await?;
    db.migrate().await?;
    Ok(db)
}

/// The state directory holds the database and the server key: created owner-only.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates one API key when the database has none, logging its token once.
async fn bootstrap_key(db: &Db) -> Result<(), ServeError> {
    let err = |e: crate::error::ApiError| ServeError::Setup(e.message);
    let mut tx = db.begin_write().await.map_err(|e| err(e.into()))?;
    if db.backend == crate::db::Backend::Postgres {
        // Replicas starting together on an empty database create one key, not one each.
        sqlx::query("SELECT pg_advisory_xact_lock(7265331)")
            .execute(&mut *tx)
            .await
            .map_err(|e| err(e.into()))?;
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| err(e.into()))?;
    if n == 0 {
        let (id, token) = crate::api::api_keys_insert(&mut tx, "bootstrap")
            .await
            .map_err(err)?;
        tx.commit().await.map_err(|e| err(e.into()))?;
        // Shown once, like any API key's token; it is stored only as a hash.
        tracing::info!(api_key_id = %id, api_key = %token, "bootstrap api key");
    }
    Ok(())
}

pub async fn serve(settings: Settings) -> Result<(), ServeError> {
    let db = open(&settings).await?;
    let keys = settings.keyring()?;
    bootstrap_key(&db).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let ingest = crate::ingest::Ingest::new(&settings.audit)
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let state = Arc::new(AppState { db, keys, ingest });
    let (stop_tx, stop_rx) = watch::channel(false);
    let replica = format!("{}-{}", std::process::id(), crate::ids::random_hex(4));
    let refresher = tokio::spawn(broker::run(
        state.clone(),
        settings.refresh.clone(),
        replica,
        stop_rx,
    ));
    let app = crate::api::router(state.clone());
    tracing::info!(listener = "api", addr = %addr, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), refresher).await;
    state.db.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// `iron-control rotate-key`: re-encrypts every sealed value under the current key.
pub async fn rotate(settings: Settings) -> Result<usize, ServeError> {
    let keys = settings.keyring()?;
    let db = open(&settings).await?;
    let err = |e: crate::error::ApiError| ServeError::Setup(e.message);
    let mut tx = db.begin_write().await.map_err(|e| err(e.into()))?;
    let mut n = crate::store::reseal_all(&mut tx, &keys)
        .await
        .map_err(err)?;
    n += broker::reseal_all(&mut tx, &keys).await.map_err(err)?;
    tx.commit().await.map_err(|e| err(e.into()))?;
    Ok(n)
}
