//! The database: one sqlx `Any` pool over SQLite or PostgreSQL, the embedded migrations of each,
//! and write transactions.
//!
//! Every query is written once with `$N` placeholders, which both drivers accept. Values are
//! stored as TEXT (JSON), BIGINT (integers, flags, epoch milliseconds) and BLOB/BYTEA (sealed
//! secrets), the types the `Any` driver carries for both engines.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL must start with sqlite:// or postgres:// (got `{0}`)")]
    Scheme(String),
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite has one writer; serialising write transactions in-process avoids SQLITE_BUSY on
    /// lock upgrades. PostgreSQL does its own row locking, so this is only taken for SQLite.
    write_lock: Arc<Mutex<()>>,
}

/// A write transaction (and, for SQLite, the in-process writer lock held until it ends).
pub struct WriteTx<'a> {
    pub tx: Transaction<'static, Any>,
    _guard: Option<MutexGuard<'a, ()>>,
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl WriteTx<'_> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

fn migrations(backend: Backend) -> Vec<Migration> {
    let sql: &[(i64, &str, &'static str)] = match backend {
        Backend::Sqlite => &[
            (
                1,
                "init",
                include_str!("../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "ingest",
                include_str!("../migrations/sqlite/0002_ingest.sql"),
            ),
        ],
        Backend::Postgres => &[
            (
                1,
                "init",
                include_str!("../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "ingest",
                include_str!("../migrations/postgres/0002_ingest.sql"),
            ),
        ],
    };
    sql.iter()
        .map(|(v, d, s)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                sqlx::SqlStr::from_static(s),
                false,
            )
        })
        .collect()
}

impl Db {
    /// Opens (creating a SQLite file if needed) and connects; does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::Scheme(url.to_owned()));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => url.to_owned(),
        };
        let opts = AnyConnectOptions::from_str(&url).map_err(DbError::Open)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor as _;
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(DbError::Open)?;
        Ok(Self {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = Migrator::with_migrations(migrations(self.backend));
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub async fn begin_write(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        };
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, _guard: guard })
    }

    /// SQL for "this TEXT column holds a JSON object containing `$n`" (label filters).
    pub fn json_contains(&self, column: &str, param: usize) -> String {
        match self.backend {
            Backend::Postgres => format!("({column}::jsonb @> ${param}::jsonb)"),
            // SQLite: every key of the filter object must map to an equal JSON value.
            Backend::Sqlite => format!(
                "NOT EXISTS (SELECT 1 FROM json_each(${param}) AS f WHERE \
                 json_type({column}, '$.\"' || f.key || '\"') IS NOT f.type \
                 OR json_extract({column}, '$.\"' || f.key || '\"') IS NOT f.value)"
            ),
        }
    }
}

/// `sqlite://PATH` -> WAL, created if missing. Options the user gave are kept.
fn sqlite_url(url: &str) -> String {
    let mut url = url.to_owned();
    let sep = if url.contains('?') { '&' } else { '?' };
    if !url.contains("mode=") {
        url.push(sep);
        url.push_str("mode=rwc");
    }
    url
}
