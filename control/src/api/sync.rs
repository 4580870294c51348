//! `POST /api/v1/proxy/sync`: a proxy (bearer `iprx_...`) fetches its config; a matching
//! `config_hash` gets the hash alone.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use sqlx::Row;

use super::auth::bearer;
use super::{S, json_response};
use crate::delivery::{self, Config};
use crate::error::{ApiError, ApiResult};
use crate::ids::{is_token, token_hash};
use crate::input::{Errors, JsonBody, Obj};

pub fn routes() -> Router<S> {
    Router::new().route("/api/v1/proxy/sync", post(sync))
}

fn invalid() -> ApiError {
    ApiError::unauthorized("invalid or missing proxy token")
}

async fn sync(State(st): State<S>, headers: HeaderMap, body: JsonBody) -> ApiResult<Response> {
    let token = bearer(&headers)
        .filter(|t| is_token(t, "iprx_"))
        .ok_or_else(invalid)?;
    let held = match &body.0 {
        serde_json::Value::Null => None,
        _ => {
            let m = body.object()?;
            let o = Obj::new(&m, "");
            let mut errs = Errors::default();
            o.check_keys(&["config_hash"], &mut errs);
            let h = o.string("config_hash", 256, &mut errs);
            errs.check()?;
            h
        }
    };
    let mut conn = st.db.pool.acquire().await?;
    let row = sqlx::query(delivery::PROXY_SQL)
        .bind(token_hash(token))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(invalid)?;
    if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "proxy_revoked",
            "this proxy has been deleted; enroll it again",
        ));
    }
    let ingest_token = ingest_token(&st, &row, token).await?;
    let principal: Option<String> = row.try_get("principal_id")?;
    let assigned_at: Option<i64> = row.try_get("principal_assigned_at")?;
    let tags: Vec<String> =
        serde_json::from_str(&row.try_get::<String, _>("tags")?).unwrap_or_default();
    let mut cfg = Config::default();
    if let Some(p) = &principal {
        let grants = delivery::granted(&mut conn, &st.keys, p).await?;
        delivery::from_grants(&mut conn, &st.keys, &grants, false, &mut cfg).await?;
    }
    delivery::from_policies(&mut conn, &tags, &mut cfg).await?;
    let mut payload = cfg.payload(principal.as_deref(), assigned_at);
    let hash = payload["config_hash"].clone();
    // Tags and the ingest token travel in every answer, outside the hash: an agent picks
    // them up whether or not its config changed.
    let extra = [("tags", json!(tags)), ("ingest_token", json!(ingest_token))];
    if held.is_some_and(|h| hash.as_str() == Some(h.as_str())) {
        payload = json!({"config_hash": hash});
    }
    for (k, v) in extra {
        payload[k] = v;
    }
    Ok(json_response(StatusCode::OK, &payload))
}

/// The proxy's ingest token (derived from its proxy token, see [`crate::ingest::token`]);
/// its hash is recorded the first time it is handed out, so the receiver can look it up.
async fn ingest_token(st: &S, row: &sqlx::any::AnyRow, proxy_token: &str) -> ApiResult<String> {
    let t = crate::ingest::token::derive(proxy_token);
    let hash = token_hash(&t);
    if row
        .try_get::<Option<String>, _>("ingest_token_hash")?
        .as_deref()
        != Some(hash.as_str())
    {
        let mut tx = st.db.begin_write().await?;
        sqlx::query("UPDATE proxies SET ingest_token_hash = $1 WHERE id = $2")
            .bind(&hash)
            .bind(row.try_get::<String, _>("id")?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(t)
}
