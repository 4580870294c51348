//! Grants: one secret to one grantee (a principal or a role).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::{S, data, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::{iso, new_id, now_ms};
use crate::input::{Errors, JsonBody, Obj, SHORT};
use crate::model::Kind;

pub const GRANT_COLS: &str =
    "id, principal_id, role_id, secret_id, secret_kind, priority, created_at, updated_at";

pub fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/grants", post(create))
        .route("/api/v1/grants/{id}", get(fetch).delete(delete))
}

pub fn render_grant(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let mut o = Map::new();
    o.insert("id".into(), json!(r.try_get::<String, _>("id")?));
    for col in ["principal_id", "role_id"] {
        if let Some(v) = r.try_get::<Option<String>, _>(col)? {
            o.insert(col.into(), json!(v));
        }
    }
    let kind =
        Kind::from_name(&r.try_get::<String, _>("secret_kind")?).ok_or_else(ApiError::internal)?;
    o.insert(
        kind.grant_field().into(),
        json!(r.try_get::<String, _>("secret_id")?),
    );
    o.insert("priority".into(), json!(r.try_get::<i64, _>("priority")?));
    o.insert("created_at".into(), json!(iso(r.try_get("created_at")?)));
    o.insert("updated_at".into(), json!(iso(r.try_get("updated_at")?)));
    Ok(Value::Object(o))
}

async fn exists(conn: &mut sqlx::AnyConnection, kind: Kind, id: &str) -> ApiResult<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM resources WHERE id = $1 AND kind = $2")
            .bind(id)
            .bind(kind.name())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

async fn create(State(st): State<S>, body: JsonBody) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    let mut allowed = vec!["principal_id", "role_id", "priority"];
    allowed.extend(Kind::GRANTABLE.iter().map(|k| k.grant_field()));
    o.check_keys(&allowed, &mut errs);
    let principal = o.string("principal_id", SHORT, &mut errs);
    let role = o.string("role_id", SHORT, &mut errs);
    let priority = o
        .int("priority", -1_000_000_000, 1_000_000_000, &mut errs)
        .unwrap_or(0);
    let secrets: Vec<(Kind, String)> = Kind::GRANTABLE
        .iter()
        .filter_map(|k| o.string(k.grant_field(), SHORT, &mut errs).map(|v| (*k, v)))
        .collect();
    match (&principal, &role) {
        (None, None) => errs.add("base", "must reference one of principal_id, role_id"),
        (Some(_), Some(_)) => errs.add("base", "must reference only one of principal_id, role_id"),
        _ => {}
    }
    match secrets.len() {
        0 => errs.add(
            "base",
            "must reference one of static_secret_id, gcp_auth_secret_id, oauth_token_secret_id, pg_dsn_secret_id, hmac_secret_id",
        ),
        1 => {}
        _ => errs.add("base", "must reference only one secret"),
    }
    errs.check()?;
    let Some((secret_kind, secret_id)) = secrets.into_iter().next() else {
        return Err(ApiError::internal());
    };
    let mut tx = st.db.begin_write().await?;
    let (gcol, gid, gkind) = match (&principal, &role) {
        (Some(p), _) => ("principal_id", p.clone(), Kind::Principal),
        (_, Some(r)) => ("role_id", r.clone(), Kind::Role),
        _ => return Err(ApiError::internal()),
    };
    if !exists(&mut tx, gkind, &gid).await? {
        return Err(super::resources::not_found(gkind));
    }
    if !exists(&mut tx, secret_kind, &secret_id).await? {
        return Err(super::resources::not_found(secret_kind));
    }
    let dup: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM grants WHERE {gcol} = $1 AND secret_id = $2"
    )))
    .bind(&gid)
    .bind(&secret_id)
    .fetch_optional(&mut *tx)
    .await?;
    if dup.is_some() {
        return Err(ApiError::invalid(
            secret_kind.grant_field(),
            "has already been granted to this grantee",
        ));
    }
    let id = new_id("grant_");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO grants (id, {gcol}, secret_id, secret_kind, priority, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)"
    )))
    .bind(&id)
    .bind(&gid)
    .bind(&secret_id)
    .bind(secret_kind.name())
    .bind(priority)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    let row = load(&mut tx, &id).await?.ok_or_else(ApiError::internal)?;
    tx.commit().await?;
    Ok(data(StatusCode::CREATED, render_grant(&row)?))
}

async fn load(conn: &mut sqlx::AnyConnection, id: &str) -> ApiResult<Option<sqlx::any::AnyRow>> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {GRANT_COLS} FROM grants WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

async fn fetch(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    let mut conn = st.db.pool.acquire().await?;
    let row = load(&mut conn, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("grant"))?;
    Ok(data(StatusCode::OK, render_grant(&row)?))
}

async fn delete(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query("DELETE FROM grants WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("grant"));
    }
    tx.commit().await?;
    Ok(no_content())
}
