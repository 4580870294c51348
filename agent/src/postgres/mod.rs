//! PostgreSQL proxy (iron-proxy §21): workloads log in with one shared proxy credential; the
//! proxy logs in upstream with the real DSN (from any secret source), pins `SET ROLE` and
//! session settings, and refuses statements that would undo them. The workload never sees the
//! DSN or its password. See docs/postgres.md.
//!
//! Data path, one module per step:
//! [`listener`] (accept, reconfigure) → [`session`] (startup, routing by database) →
//! [`auth`] (client credential) → [`upstream`] (+ [`upstream_tls`], [`dsn`]: login and
//! pinning) → [`relay`] (+ [`sql`], [`routine`]: the statement policy) → [`audit`].
//! [`wire`] is the protocol codec of the proxy's own messages; [`redirect`] keeps the eBPF
//! redirect entries for configured database destinations; [`config`] is the YAML block (in
//! `config/postgres.rs`, with the rest of the config).

pub mod audit;
pub mod auth;
pub mod dsn;
pub mod listener;
pub mod redirect;
pub mod relay;
pub mod routine;
pub mod session;
pub mod sql;
pub mod upstream;
pub mod upstream_tls;
pub mod wire;

pub use crate::config::postgres as config;
pub use config::PostgresConfig;
pub use listener::{Deps, PgError, PostgresProxy};
