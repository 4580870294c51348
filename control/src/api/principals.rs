//! Principal and role sub-resources: effective config and grant listings.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use serde_json::json;
use sqlx::Row;

use super::grants::{GRANT_COLS, render_grant};
use super::resources::not_found;
use super::{S, json_response};
use crate::delivery::{self, Config};
use crate::error::ApiResult;
use crate::input::parse_query;
use crate::model::{Kind, Stored};
use crate::store;

pub fn routes() -> Router<S> {
    Router::new()
        .route(
            "/api/v1/principals/{id}/effective_config",
            get(|st: State<S>, Path(id): Path<String>| async move {
                let mut conn = st.db.pool.acquire().await?;
                let p = store::by_id(&mut conn, &st.keys, Kind::Principal, &id).await?;
                effective(&st, &mut conn, p).await
            }),
        )
        .route(
            "/api/v1/principals/lookup/{namespace}/{foreign_id}/effective_config",
            get(
                |st: State<S>, Path((ns, fid)): Path<(String, String)>| async move {
                    let mut conn = st.db.pool.acquire().await?;
                    let p = store::by_foreign_id(&mut conn, &st.keys, Kind::Principal, &ns, &fid)
                        .await?;
                    effective(&st, &mut conn, p).await
                },
            ),
        )
        .route(
            "/api/v1/principals/{id}/grants",
            get(|st: State<S>, id: Path<String>, q: RawQuery| {
                grants_of(st, Kind::Principal, id, q)
            }),
        )
        .route(
            "/api/v1/roles/{id}/grants",
            get(|st: State<S>, id: Path<String>, q: RawQuery| grants_of(st, Kind::Role, id, q)),
        )
}

/// What the principal resolves to, values redacted, with a content ETag.
async fn effective(
    st: &S,
    conn: &mut sqlx::AnyConnection,
    principal: Option<Stored>,
) -> ApiResult<Response> {
    let p = principal.ok_or_else(|| not_found(Kind::Principal))?;
    let grants = delivery::granted(conn, &st.keys, &p.id).await?;
    let mut cfg = Config::default();
    delivery::from_grants(conn, &st.keys, &grants, true, &mut cfg).await?;
    let body = json!({
        "data": {
            "id": p.id,
            "secrets": cfg.secrets,
            "transforms": cfg.transforms,
            "postgres": cfg.postgres,
        }
    });
    let etag = format!("\"{}\"", delivery::hash(&body));
    let mut resp = json_response(StatusCode::OK, &body);
    let h = resp.headers_mut();
    if let Ok(v) = etag.parse() {
        h.insert(http::header::ETAG, v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp.into_response())
}

async fn grants_of(
    State(st): State<S>,
    kind: Kind,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let mut conn = st.db.pool.acquire().await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM resources WHERE id = $1 AND kind = $2")
            .bind(&id)
            .bind(kind.name())
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Err(not_found(kind));
    }
    let col = if kind == Kind::Principal {
        "principal_id"
    } else {
        "role_id"
    };
    let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM grants WHERE {col} = $1"
    )))
    .bind(&id)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {GRANT_COLS} FROM grants WHERE {col} = $1 ORDER BY seq LIMIT $2 OFFSET $3"
    )))
    .bind(&id)
    .bind(q.limit)
    .bind(q.offset())
    .fetch_all(&mut *conn)
    .await?;
    let items = rows
        .iter()
        .map(render_grant)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": items, "meta": q.meta(total)}),
    ))
}
