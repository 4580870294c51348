//! The tag-matched policies API (`/v1/policies/{network,secrets,mcp}`): bodies are top-level
//! objects (not wrapped in `data`), ids `npol_`/`spol_`/`mpol_`, lists ordered by priority,
//! errors with the documented codes (404 `*_policy_not_found`, 409 `*_policy_name_taken`,
//! 415 `unsupported_media_type`, 422 `validation_error`).

mod mcp;
mod network;
mod secrets;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use http::StatusCode;
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::api::{S, data, json_response, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::{iso, new_id, now_ms};
use crate::input::{Errors, JsonBody, Obj, SHORT, parse_query};

pub use mcp::deliver as deliver_mcp;
pub use network::deliver_rules;
pub use secrets::deliver as deliver_secret;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Network,
    Secrets,
    Mcp,
}

impl PolicyKind {
    fn name(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Secrets => "secrets",
            Self::Mcp => "mcp",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Network => "npol_",
            Self::Secrets => "spol_",
            Self::Mcp => "mpol_",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Secrets => "secret",
            Self::Mcp => "mcp",
        }
    }

    fn not_found(self) -> ApiError {
        let code = match self {
            Self::Network => "network_policy_not_found",
            Self::Secrets => "secret_policy_not_found",
            Self::Mcp => "mcp_policy_not_found",
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            code,
            format!("{} policy not found", self.code()),
        )
    }

    fn name_taken(self) -> ApiError {
        let code = match self {
            Self::Network => "network_policy_name_taken",
            Self::Secrets => "secret_policy_name_taken",
            Self::Mcp => "mcp_policy_name_taken",
        };
        ApiError::conflict(code, "Name has already been taken")
    }

    /// Kind-specific attributes: validated into the stored body.
    fn validate(self, o: Obj<'_>, errs: &mut Errors) -> Map<String, Value> {
        match self {
            Self::Network => network::validate(o, errs),
            Self::Secrets => secrets::validate(o, errs),
            Self::Mcp => mcp::validate(o, errs),
        }
    }

    fn attrs(self) -> &'static [&'static str] {
        match self {
            Self::Network => &["rules", "version"],
            Self::Secrets => &["mode", "source", "inject_config", "replace_config", "rules"],
            Self::Mcp => &["rules", "tools"],
        }
    }
}

const COMMON: &[&str] = &["name", "priority", "active", "match_tags"];
/// Server-owned fields: accepted and dropped.
const SERVER_OWNED: &[&str] = &[
    "id",
    "organization_id",
    "created_by_id",
    "created_at",
    "updated_at",
];

pub fn routes() -> Router<S> {
    let mut r = Router::new();
    for kind in [PolicyKind::Network, PolicyKind::Secrets, PolicyKind::Mcp] {
        let base = format!("/v1/policies/{}", kind.name());
        r = r
            .route(
                &base,
                get(move |st: State<S>, q: RawQuery| list(st, kind, q))
                    .post(move |st: State<S>, b: JsonBody| create(st, kind, b)),
            )
            .route(
                &format!("{base}/{{id}}"),
                get(move |st: State<S>, id: Path<String>| fetch(st, kind, id))
                    .put(move |st: State<S>, id: Path<String>, b: JsonBody| {
                        update(st, kind, id, b, false)
                    })
                    .patch(move |st: State<S>, id: Path<String>, b: JsonBody| {
                        update(st, kind, id, b, true)
                    })
                    .delete(move |st: State<S>, id: Path<String>| delete(st, kind, id)),
            );
    }
    r
}

/// `[a-z0-9]+(-[a-z0-9]+)*`
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

struct Validated {
    name: String,
    priority: i64,
    active: bool,
    match_tags: Vec<String>,
    body: Map<String, Value>,
}

fn validate(kind: PolicyKind, m: &Map<String, Value>) -> ApiResult<Validated> {
    let o = Obj::new(m, "");
    let mut errs = Errors::default();
    let allowed: Vec<&str> = COMMON
        .iter()
        .chain(SERVER_OWNED)
        .chain(kind.attrs())
        .copied()
        .collect();
    o.check_keys(&allowed, &mut errs);
    let name = o.req_string("name", SHORT, &mut errs);
    if let Some(n) = &name
        && !valid_name(n)
    {
        errs.add("name", "must match [a-z0-9]+(-[a-z0-9]+)*");
    }
    if o.present("priority").is_none() {
        errs.add("priority", "can't be blank");
    }
    let priority = o.int("priority", -1_000_000_000, 1_000_000_000, &mut errs);
    let active = o.bool("active", &mut errs).unwrap_or(true);
    let match_tags = o
        .strings("match_tags", SHORT, &mut errs)
        .unwrap_or_default();
    let body = kind.validate(o, &mut errs);
    errs.check()?;
    Ok(Validated {
        name: name.unwrap_or_default(),
        priority: priority.unwrap_or_default(),
        active,
        match_tags,
        body,
    })
}

fn render(kind: PolicyKind, r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let mut out = Map::new();
    out.insert("id".into(), json!(r.try_get::<String, _>("id")?));
    out.insert("name".into(), json!(r.try_get::<String, _>("name")?));
    out.insert("active".into(), json!(r.try_get::<i64, _>("active")? != 0));
    out.insert("priority".into(), json!(r.try_get::<i64, _>("priority")?));
    out.insert(
        "match_tags".into(),
        crate::store::parse_json(&r.try_get::<String, _>("match_tags")?)?,
    );
    if let Value::Object(b) = crate::store::parse_json(&r.try_get::<String, _>("body")?)? {
        out.extend(b);
    }
    let _ = kind;
    out.insert("created_at".into(), json!(iso(r.try_get("created_at")?)));
    out.insert("updated_at".into(), json!(iso(r.try_get("updated_at")?)));
    Ok(Value::Object(out))
}

const COLS: &str = "id, name, active, priority, match_tags, body, created_at, updated_at";

async fn list(State(st): State<S>, kind: PolicyKind, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let mut sql = format!("SELECT {COLS} FROM policies WHERE kind = $1");
    let name = q.params.get("name").cloned();
    let active = match q.params.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(1i64),
        Some("false") => Some(0i64),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "active must be true or false, got `{other}`"
            )));
        }
    };
    let mut n = 2;
    if name.is_some() {
        sql.push_str(&format!(" AND name = ${n}"));
        n += 1;
    }
    if active.is_some() {
        sql.push_str(&format!(" AND active = ${n}"));
    }
    sql.push_str(" ORDER BY priority, seq");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kind.name());
    if let Some(name) = &name {
        query = query.bind(name);
    }
    if let Some(a) = active {
        query = query.bind(a);
    }
    let rows = query.fetch_all(&st.db.pool).await?;
    let items = rows
        .iter()
        .map(|r| render(kind, r))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(json_response(StatusCode::OK, &json!({ "data": items })))
}

async fn load(
    conn: &mut sqlx::AnyConnection,
    kind: PolicyKind,
    id: &str,
) -> ApiResult<sqlx::any::AnyRow> {
    let sql = format!("SELECT {COLS} FROM policies WHERE id = $1 AND kind = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(kind.name())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| kind.not_found())
}

async fn fetch(
    State(st): State<S>,
    kind: PolicyKind,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut conn = st.db.pool.acquire().await?;
    let row = load(&mut conn, kind, &id).await?;
    Ok(data(StatusCode::OK, render(kind, &row)?))
}

fn name_error(kind: PolicyKind, e: sqlx::Error) -> ApiError {
    if crate::store::is_unique_violation(&e) {
        kind.name_taken()
    } else {
        e.into()
    }
}

async fn create(State(st): State<S>, kind: PolicyKind, body: JsonBody) -> ApiResult<Response> {
    let v = validate(kind, &body.object()?)?;
    let id = new_id(kind.prefix());
    let now = now_ms();
    let mut tx = st.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO policies (id, kind, name, active, priority, match_tags, body, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(kind.name())
    .bind(&v.name)
    .bind(i64::from(v.active))
    .bind(v.priority)
    .bind(json!(v.match_tags).to_string())
    .bind(Value::Object(v.body).to_string())
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| name_error(kind, e))?;
    let row = load(&mut tx, kind, &id).await?;
    let out = render(kind, &row)?;
    tx.commit().await?;
    Ok(data(StatusCode::CREATED, out))
}

/// PUT replaces the whole representation; PATCH merges the supplied fields into it.
async fn update(
    State(st): State<S>,
    kind: PolicyKind,
    Path(id): Path<String>,
    body: JsonBody,
    merge: bool,
) -> ApiResult<Response> {
    let supplied = body.object()?;
    let mut tx = st.db.begin_write().await?;
    let row = load(&mut tx, kind, &id).await?;
    let input = if merge {
        let mut current = match render(kind, &row)? {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        current.extend(supplied);
        current
    } else {
        supplied
    };
    let v = validate(kind, &input)?;
    sqlx::query(
        "UPDATE policies SET name = $2, active = $3, priority = $4, match_tags = $5, body = $6, \
         updated_at = $7 WHERE id = $1",
    )
    .bind(&id)
    .bind(&v.name)
    .bind(i64::from(v.active))
    .bind(v.priority)
    .bind(json!(v.match_tags).to_string())
    .bind(Value::Object(v.body).to_string())
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(|e| name_error(kind, e))?;
    let row = load(&mut tx, kind, &id).await?;
    let out = render(kind, &row)?;
    tx.commit().await?;
    Ok(data(StatusCode::OK, out))
}

async fn delete(
    State(st): State<S>,
    kind: PolicyKind,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut tx = st.db.begin_write().await?;
    let n = sqlx::query("DELETE FROM policies WHERE id = $1 AND kind = $2")
        .bind(&id)
        .bind(kind.name())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(kind.not_found());
    }
    tx.commit().await?;
    Ok(no_content())
}

/// Network-policy rule objects `{host, paths, methods}`; shared by all three kinds.
pub fn validate_rules(o: Obj<'_>, errs: &mut Errors) -> Vec<Value> {
    let Some(arr) = o.array("rules", errs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, r) in arr.iter().enumerate() {
        let at = format!("rules[{i}]");
        let Some(m) = r.as_object() else {
            errs.add(&at, "must be an object");
            continue;
        };
        let ro = Obj::new(m, &at);
        ro.check_keys(&["host", "paths", "methods"], errs);
        let host = ro.req_string("host", SHORT, errs);
        let paths = ro.strings("paths", 1024, errs).unwrap_or_default();
        let methods = ro.strings("methods", 16, errs).unwrap_or_default();
        for (j, m) in methods.iter().enumerate() {
            let ok = m == "*" || (!m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()));
            if !ok {
                errs.add(
                    &format!("{at}.methods[{j}]"),
                    "must be an upper-case HTTP method or *",
                );
            }
        }
        out.push(json!({"host": host, "paths": paths, "methods": methods}));
    }
    out
}
