//! Proxies: an iron-proxy / iron-agent instance, its bearer token (shown once), its principal
//! assignment and its tags. Deleting a proxy keeps a tombstone so its token gets
//! `proxy_revoked` rather than a generic 401.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::{S, data, json_response, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::{iso, iso_opt, new_id, new_token, now_ms, token_hash};
use crate::input::{Errors, JsonBody, Obj, SHORT, parse_query, tags};
use crate::model::Kind;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/proxies", post(create).get(list))
        .route(
            "/api/v1/proxies/{id}",
            get(fetch).put(update).patch(update).delete(delete),
        )
}

pub const COLS: &str =
    "id, name, principal_id, principal_assigned_at, tags, created_at, updated_at";

pub fn render(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let principal: Option<String> = r.try_get("principal_id")?;
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "name": r.try_get::<String, _>("name")?,
        "principal_id": principal,
        "status": if principal.is_some() { "assigned" } else { "unassigned" },
        "principal_assigned_at": iso_opt(r.try_get("principal_assigned_at")?),
        "tags": crate::store::parse_json(&r.try_get::<String, _>("tags")?)?,
        "created_at": iso(r.try_get("created_at")?),
        "updated_at": iso(r.try_get("updated_at")?),
    }))
}

pub async fn load(conn: &mut sqlx::AnyConnection, id: &str) -> ApiResult<sqlx::any::AnyRow> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM proxies WHERE id = $1 AND deleted_at IS NULL"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("proxy"))
}

async fn principal_exists(conn: &mut sqlx::AnyConnection, id: &str) -> ApiResult<()> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM resources WHERE id = $1 AND kind = $2")
            .bind(id)
            .bind(Kind::Principal.name())
            .fetch_optional(&mut *conn)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| super::resources::not_found(Kind::Principal))
}

/// Inserts a proxy; returns (id, plaintext token).
pub async fn insert(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    principal: Option<&str>,
    tags: &[String],
) -> ApiResult<(String, String)> {
    let id = new_id("prx_");
    let token = new_token("iprx_");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO proxies (id, name, token_hash, principal_id, principal_assigned_at, tags, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(name)
    .bind(token_hash(&token))
    .bind(principal)
    .bind(principal.map(|_| now))
    .bind(json!(tags).to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok((id, token))
}

/// The representation with the one-time token inserted after `name`.
pub fn with_token(v: Value, token: &str) -> Value {
    let Value::Object(m) = v else { return v };
    let mut out = Map::new();
    for (k, v) in m {
        let after_name = k == "name";
        out.insert(k, v);
        if after_name {
            out.insert("token".into(), json!(token));
        }
    }
    Value::Object(out)
}

async fn create(State(st): State<S>, body: JsonBody) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    o.check_keys(&["name", "principal_id", "tags"], &mut errs);
    let name = o.req_string("name", SHORT, &mut errs);
    let principal = o.string("principal_id", SHORT, &mut errs);
    let tags = tags(o, "tags", &mut errs).unwrap_or_default();
    errs.check()?;
    let mut tx = st.db.begin_write().await?;
    if let Some(p) = &principal {
        principal_exists(&mut tx, p).await?;
    }
    let (id, token) = insert(
        &mut tx,
        &name.unwrap_or_default(),
        principal.as_deref(),
        &tags,
    )
    .await?;
    let row = load(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(data(StatusCode::CREATED, with_token(render(&row)?, &token)))
}

async fn list(State(st): State<S>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let principal = q.params.get("principal_id");
    let filter = if principal.is_some() {
        "deleted_at IS NULL AND principal_id = $1"
    } else {
        "deleted_at IS NULL"
    };
    let mut count = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM proxies WHERE {filter}"
    )));
    let n = if let Some(p) = principal {
        count = count.bind(p);
        2
    } else {
        1
    };
    let total: i64 = count.fetch_one(&st.db.pool).await?.try_get("n")?;
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM proxies WHERE {filter} ORDER BY seq LIMIT ${n} OFFSET ${}",
        n + 1
    )));
    if let Some(p) = principal {
        rows = rows.bind(p);
    }
    let rows = rows
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
    let mut conn = st.db.pool.acquire().await?;
    Ok(data(StatusCode::OK, render(&load(&mut conn, &id).await?)?))
}

/// Name, tags, and the principal: assigned, swapped, or cleared with `null`; omitted keeps it.
async fn update(
    State(st): State<S>,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    o.check_keys(
        &[
            "name",
            "principal_id",
            "tags",
            "id",
            "status",
            "principal_assigned_at",
            "created_at",
            "updated_at",
        ],
        &mut errs,
    );
    let name = if o.has("name") {
        o.req_string("name", SHORT, &mut errs)
    } else {
        None
    };
    let principal = o.string("principal_id", SHORT, &mut errs);
    let tags = tags(o, "tags", &mut errs);
    errs.check()?;
    let mut tx = st.db.begin_write().await?;
    load(&mut tx, &id).await?;
    let now = now_ms();
    if let Some(n) = &name {
        sqlx::query("UPDATE proxies SET name = $2, updated_at = $3 WHERE id = $1")
            .bind(&id)
            .bind(n)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(t) = &tags {
        sqlx::query("UPDATE proxies SET tags = $2, updated_at = $3 WHERE id = $1")
            .bind(&id)
            .bind(json!(t).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    if o.has("principal_id") {
        if let Some(p) = &principal {
            principal_exists(&mut tx, p).await?;
        }
        sqlx::query(
            "UPDATE proxies SET principal_id = $2, principal_assigned_at = $3, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(&id)
        .bind(principal.as_deref())
        .bind(principal.as_ref().map(|_| now))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let row = load(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(data(StatusCode::OK, render(&row)?))
}

async fn delete(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query(
        "UPDATE proxies SET deleted_at = $2, principal_id = NULL, principal_assigned_at = NULL, \
         updated_at = $2 WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(&id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("proxy"));
    }
    tx.commit().await?;
    Ok(no_content())
}
