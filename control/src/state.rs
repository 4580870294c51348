//! Shared server state. Everything another replica needs lives in the database; this holds
//! the pool, the key, and this process's ring of recent audit events.

use std::sync::Arc;

use crate::crypto::Keyring;
use crate::db::Db;
use crate::ingest::Ingest;

pub struct AppState {
    pub db: Db,
    pub keys: Keyring,
    pub ingest: Arc<Ingest>,
}
