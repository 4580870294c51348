//! Enrollment tokens (API key) and `POST /api/v1/proxy/enroll` (the token is the credential).

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{delete, post};
use http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use super::{S, data, json_response, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::{iso, new_id, now_ms, random_hex, token_hash};
use crate::input::{Errors, JsonBody, Obj, SHORT, parse_query, tags};

pub fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/enrollment_tokens", post(create).get(list))
        .route("/api/v1/enrollment_tokens/{id}", delete(remove))
}

pub fn public_routes() -> Router<S> {
    Router::new().route("/api/v1/proxy/enroll", post(enroll))
}

const COLS: &str = "id, tags, expires_at, max_uses, uses, created_at, updated_at";
const MAX_EXPIRY_S: i64 = 365 * 86_400;

fn render(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "tags": crate::store::parse_json(&r.try_get::<String, _>("tags")?)?,
        "expires_at": iso(r.try_get("expires_at")?),
        "max_uses": r.try_get::<i64, _>("max_uses")?,
        "uses": r.try_get::<i64, _>("uses")?,
        "created_at": iso(r.try_get("created_at")?),
        "updated_at": iso(r.try_get("updated_at")?),
    }))
}

async fn create(State(st): State<S>, body: JsonBody) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    o.check_keys(&["tags", "expires_in_seconds", "max_uses"], &mut errs);
    let tags = tags(o, "tags", &mut errs).unwrap_or_default();
    let expires_in = o
        .int("expires_in_seconds", 1, MAX_EXPIRY_S, &mut errs)
        .unwrap_or(3600);
    let max_uses = o.int("max_uses", 0, 1_000_000_000, &mut errs).unwrap_or(1);
    errs.check()?;
    // 32 random bytes as 64 hex, as iron-proxy's `init -enrollment-token` expects.
    let token = random_hex(32);
    let id = new_id("enr_");
    let now = now_ms();
    let mut tx = st.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, token_hash, tags, expires_at, max_uses, uses, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
    )
    .bind(&id)
    .bind(token_hash(&token))
    .bind(json!(tags).to_string())
    .bind(now + expires_in * 1000)
    .bind(max_uses)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(data(
        StatusCode::CREATED,
        json!({
            "id": id,
            "token": token,
            "tags": tags,
            "expires_at": iso(now + expires_in * 1000),
            "max_uses": max_uses,
            "uses": 0,
            "created_at": iso(now),
            "updated_at": iso(now),
        }),
    ))
}

async fn list(State(st): State<S>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM enrollment_tokens")
        .fetch_one(&st.db.pool)
        .await?
        .try_get("n")?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM enrollment_tokens ORDER BY seq LIMIT $1 OFFSET $2"
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

async fn remove(State(st): State<S>, Path(id): Path<String>) -> ApiResult<Response> {
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query("DELETE FROM enrollment_tokens WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("enrollment token"));
    }
    tx.commit().await?;
    Ok(no_content())
}

fn refused(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Redeems an enrollment token: one use is counted atomically (a conditional UPDATE), and a
/// proxy carrying the token's tags is created in the same transaction.
async fn enroll(State(st): State<S>, body: JsonBody) -> ApiResult<Response> {
    let d = body.object()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    o.check_keys(&["enrollment_token", "name"], &mut errs);
    let token = o.req_string("enrollment_token", SHORT, &mut errs);
    let name = o.string("name", SHORT, &mut errs);
    errs.check()?;
    let hash = token_hash(token.as_deref().unwrap_or_default());
    let now = now_ms();
    let mut tx = st.db.begin_write().await?;
    let row = sqlx::query(
        "SELECT id, tags, expires_at, max_uses, uses FROM enrollment_tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| refused("invalid_token", "invalid enrollment token"))?;
    let id: String = row.try_get("id")?;
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Err(refused("token_expired", "enrollment token has expired"));
    }
    let max_uses: i64 = row.try_get("max_uses")?;
    let counted = sqlx::query(
        "UPDATE enrollment_tokens SET uses = uses + 1, updated_at = $2 WHERE id = $1 \
         AND (max_uses = 0 OR uses < max_uses)",
    )
    .bind(&id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if counted != 1 {
        return Err(refused(
            "token_exhausted",
            &format!("enrollment token has been used its maximum of {max_uses} times"),
        ));
    }
    let tags: Vec<String> =
        serde_json::from_str(&row.try_get::<String, _>("tags")?).unwrap_or_default();
    let name = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("enrolled-{}", &random_hex(4)));
    let (proxy_id, proxy_token) = super::proxies::insert(&mut tx, &name, None, &tags).await?;
    tx.commit().await?;
    tracing::info!(proxy_id = %proxy_id, enrollment_token_id = %id, "proxy enrolled");
    Ok(data(
        StatusCode::CREATED,
        json!({"id": proxy_id, "token": proxy_token, "tags": tags}),
    ))
}
