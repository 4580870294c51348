//! Role assignments: `/api/v1/principals/:id/roles`.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{delete, get};
use http::StatusCode;
use serde_json::json;
use sqlx::Row;

use super::resources::{not_found, present};
use super::{S, data, json_response, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::now_ms;
use crate::input::{Errors, JsonBody, Obj, SHORT, parse_query};
use crate::model::Kind;
use crate::store::{self, COLUMNS};

pub fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/principals/{id}/roles", get(list).post(assign))
        .route("/api/v1/principals/{id}/roles/{role_id}", delete(unassign))
}

async fn list(
    State(st): State<S>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let mut conn = st.db.pool.acquire().await?;
    if store::by_id(&mut conn, &st.keys, Kind::Principal, &id)
        .await?
        .is_none()
    {
        return Err(not_found(Kind::Principal));
    }
    let total: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM principal_roles WHERE principal_id = $1")
            .bind(&id)
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("r.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {cols} FROM principal_roles pr JOIN resources r ON r.id = pr.role_id \
         WHERE pr.principal_id = $1 ORDER BY pr.created_at, r.seq LIMIT $2 OFFSET $3"
    )))
    .bind(&id)
    .bind(q.limit)
    .bind(q.offset())
    .fetch_all(&mut *conn)
    .await?;
    let stored = rows
        .iter()
        .map(|r| store::decode(&st.keys, r))
        .collect::<ApiResult<Vec<_>>>()?;
    let items = present(&mut conn, Kind::Role, &stored).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": items, "meta": q.meta(total)}),
    ))
}

async fn assign(
    State(st): State<S>,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    o.check_keys(&["role_id"], &mut errs);
    let role_id = o.req_string("role_id", SHORT, &mut errs);
    errs.check()?;
    let role_id = role_id.unwrap_or_default();
    let mut tx = st.db.begin_write().await?;
    let p = store::by_id(&mut tx, &st.keys, Kind::Principal, &id)
        .await?
        .ok_or_else(|| not_found(Kind::Principal))?;
    let r = store::by_id(&mut tx, &st.keys, Kind::Role, &role_id)
        .await?
        .ok_or_else(|| not_found(Kind::Role))?;
    if p.namespace != r.namespace {
        return Err(ApiError::invalid(
            "role_id",
            "must be a role in the principal's namespace",
        ));
    }
    let inserted = sqlx::query(
        "INSERT INTO principal_roles (principal_id, role_id, created_at) VALUES ($1, $2, $3)",
    )
    .bind(&p.id)
    .bind(&r.id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        if store::is_unique_violation(&e) {
            return Err(ApiError::invalid("role_id", "is already assigned"));
        }
        return Err(e.into());
    }
    let out = present(&mut tx, Kind::Role, std::slice::from_ref(&r)).await?;
    tx.commit().await?;
    Ok(data(
        StatusCode::CREATED,
        out.into_iter().next().unwrap_or_default(),
    ))
}

async fn unassign(
    State(st): State<S>,
    Path((id, role_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query("DELETE FROM principal_roles WHERE principal_id = $1 AND role_id = $2")
        .bind(&id)
        .bind(&role_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("role assignment"));
    }
    tx.commit().await?;
    Ok(no_content())
}
