//! Shared server state. Everything another replica needs lives in the database; this holds
//! only the pool and the key.

use crate::crypto::Keyring;
use crate::db::Db;

pub struct AppState {
    pub db: Db,
    pub keys: Keyring,
}
