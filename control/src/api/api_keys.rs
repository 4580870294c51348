//! API keys: created with a plaintext token shown once, stored as SHA-256, revoked softly.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use super::auth::ApiKeyId;
use super::{S, data, json_response, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::{iso, new_id, new_token, now_ms, token_hash};
use crate::input::{Errors, JsonBody, Obj, SHORT, parse_query};

pub fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/api_keys", post(create).get(list))
        .route("/api/v1/api_keys/{id}", get(fetch).delete(revoke))
}

const COLS: &str = "id, name, created_at, updated_at";

fn render(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "name": r.try_get::<String, _>("name")?,
        "created_at": iso(r.try_get("created_at")?),
        "updated_at": iso(r.try_get("updated_at")?),
    }))
}

/// Inserts a key; returns (id, plaintext token).
pub async fn insert(conn: &mut sqlx::AnyConnection, name: &str) -> ApiResult<(String, String)> {
    let id = new_id("ak_");
    let token = new_token("iak_");
    sqlx::query(
        "INSERT INTO api_keys (id, name, token_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&id)
    .bind(name)
    .bind(token_hash(&token))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok((id, token))
}

async fn create(State(st): State<S>, body: JsonBody) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    o.check_keys(&["name"], &mut errs);
    let name = o.req_string("name", SHORT, &mut errs);
    errs.check()?;
    let mut tx = st.db.begin_write().await?;
    let (id, token) = insert(&mut tx, &name.unwrap_or_default()).await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM api_keys WHERE id = $1"
    )))
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut v = render(&row)?;
    if let Some(o) = v.as_object_mut() {
        let (c, u) = (o.remove("created_at"), o.remove("updated_at"));
        o.insert("token".into(), json!(token));
        o.insert("created_at".into(), c.unwrap_or_default());
        o.insert("updated_at".into(), u.unwrap_or_default());
    }
    Ok(data(StatusCode::CREATED, v))
}

async fn list(State(st): State<S>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(&st.db.pool)
        .await?
        .try_get("n")?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM api_keys WHERE revoked_at IS NULL ORDER BY seq LIMIT $1 OFFSET $2"
    )))
    .bind(q.limit)
    .bind(q.offset())
    .fetch_all(&st.db.pool)
    .await?;
    let items = rows.iter().map(render).collect::<ApiResult<Vec<_>>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": items, "meta": q.meta(total)}),
    ))
}

async fn fetch(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL"
    )))
    .bind(&id)
    .fetch_optional(&st.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(data(StatusCode::OK, render(&row)?))
}

async fn revoke(
    State(st): State<S>,
    Extension(me): Extension<ApiKeyId>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if me.0 == id {
        return Err(
            ApiError::invalid("base", "cannot revoke the API key used for this request")
                .with_message("cannot revoke the API key used for this request"),
        );
    }
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query(
        "UPDATE api_keys SET revoked_at = $2, updated_at = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(&id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("API key"));
    }
    tx.commit().await?;
    Ok(no_content())
}
