//! iron-control integration tests: the real binary on SQLite and PostgreSQL, over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod broker;
mod e2e_agent;
mod enrollment;
mod errors;
mod ingest;
mod pg;
mod policies;
mod postgres;
mod scenario;
mod server;
mod support;
mod sync;
mod token_server;
