//! The HTTP API: `/api/v1` (iron-control's API), `/v1/policies` (the tag-matched policies
//! API), `/v1/logs` (audit ingest), `/up`. Each resource family lives in its own module.

mod api_keys;
mod assignments;
mod audit;
pub mod auth;
mod enrollment;
mod grants;
mod principals;
mod proxies;
mod resources;
mod sync;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::model::Kind;
use crate::state::AppState;

pub type S = Arc<AppState>;

pub use api_keys::insert as api_keys_insert;

/// `{"data": v}` with `status`.
pub fn data(status: StatusCode, v: Value) -> Response {
    json_response(status, &json!({ "data": v }))
}

pub fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub fn router(state: S) -> Router {
    let mut api = Router::new();
    for kind in [
        Kind::Static,
        Kind::Gcp,
        Kind::Oauth,
        Kind::PgDsn,
        Kind::Hmac,
        Kind::Broker,
        Kind::Principal,
        Kind::Role,
    ] {
        api = api.merge(resources::routes(kind));
    }
    let api = api
        .merge(principals::routes())
        .merge(assignments::routes())
        .merge(grants::routes())
        .merge(api_keys::routes())
        .merge(proxies::routes())
        .merge(enrollment::routes())
        .merge(audit::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let policies = crate::policies::routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_key,
    ));
    Router::new()
        .merge(api)
        .merge(policies)
        .merge(sync::routes())
        .merge(enrollment::public_routes())
        .merge(audit::ingest_routes())
        .route("/up", get(up))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}

/// Health: 200 when the database answers, 503 otherwise.
async fn up(axum::extract::State(st): axum::extract::State<S>) -> Response {
    match sqlx::query("SELECT 1").execute(&st.db.pool).await {
        Ok(_) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            ApiError::unavailable().into_response()
        }
    }
}
