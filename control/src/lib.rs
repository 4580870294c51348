//! iron-control: the control-plane server for fleets of iron-agent / iron-proxy instances.
//!
//! Layout: `api` (HTTP handlers by resource family) and `policies` (the tag-matched policies
//! API) over `model` (validation and representations), `store` (resource rows), `delivery`
//! (what a proxy receives and its hash), `broker` (the refresh loop), `crypto` (secrets at
//! rest), `db` (SQLite / PostgreSQL), `ingest` (audit records from proxies).

pub mod api;
pub mod broker;
pub mod crypto;
pub mod db;
pub mod delivery;
pub mod error;
pub mod ids;
pub mod ingest;
pub mod input;
pub mod model;
pub mod policies;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
