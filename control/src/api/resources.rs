//! The namespaced resources (`static_secrets`, `gcp_auth_secrets`, `oauth_token_secrets`,
//! `pg_dsn_secrets`, `hmac_secrets`, `broker_credentials`, `principals`, `roles`): list, fetch,
//! lookup, create, upsert by OID or foreign_id, delete. Every write is one transaction.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use http::StatusCode;
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::{S, data, json_response, no_content};
use crate::error::{ApiError, ApiResult};
use crate::ids::{new_id, now_ms};
use crate::input::{Errors, JsonBody, Obj, SHORT, labels, parse_query, url_safe};
use crate::model::{self, BROKERS_KEY, Kind, Prepared, Stored};
use crate::store::{self, COLUMNS, NewRow};

pub fn routes(kind: Kind) -> Router<S> {
    let base = format!("/api/v1/{}", kind.name());
    Router::new()
        .route(
            &base,
            get(move |st: State<S>, q: RawQuery| list(st, kind, q))
                .post(move |st: State<S>, b: JsonBody| create(st, kind, b)),
        )
        .route(
            &format!("{base}/{{id}}"),
            get(move |st: State<S>, id: Path<String>| fetch(st, kind, id))
                .put(move |st: State<S>, id: Path<String>, b: JsonBody| upsert(st, kind, id, b))
                .patch(move |st: State<S>, id: Path<String>, b: JsonBody| upsert(st, kind, id, b))
                .delete(move |st: State<S>, id: Path<String>| delete(st, kind, id)),
        )
        .route(
            &format!("{base}/lookup/{{namespace}}/{{foreign_id}}"),
            get(move |st: State<S>, p: Path<(String, String)>| lookup(st, kind, p)),
        )
}

/// The REST representation, with the refresh state merged in for broker credentials.
pub async fn present(
    conn: &mut AnyConnection,
    kind: Kind,
    rows: &[Stored],
) -> ApiResult<Vec<Value>> {
    let mut out: Vec<Value> = rows.iter().map(|s| model::render(kind, s)).collect();
    if kind == Kind::Broker {
        for (v, s) in out.iter_mut().zip(rows) {
            let state = crate::broker::state_json(conn, &s.id).await?;
            if let (Some(o), Value::Object(st)) = (v.as_object_mut(), state) {
                let created = o.remove("created_at");
                let updated = o.remove("updated_at");
                o.extend(st);
                o.insert("created_at".into(), created.unwrap_or(Value::Null));
                o.insert("updated_at".into(), updated.unwrap_or(Value::Null));
            }
        }
    }
    Ok(out)
}

async fn present_one(conn: &mut AnyConnection, kind: Kind, s: Stored) -> ApiResult<Value> {
    Ok(present(conn, kind, std::slice::from_ref(&s))
        .await?
        .pop()
        .unwrap_or(Value::Null))
}

async fn list(State(st): State<S>, kind: Kind, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let ns = q.namespace()?;
    let mut filter = "kind = $1 AND namespace = $2".to_owned();
    if !q.labels.is_empty() {
        filter.push_str(" AND ");
        filter.push_str(&st.db.json_contains("labels", 3));
    }
    let labels = Value::Object(q.labels.clone()).to_string();
    let mut conn = st.db.pool.acquire().await?;
    let count_sql = format!("SELECT COUNT(*) AS n FROM resources WHERE {filter}");
    let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql))
        .bind(kind.name())
        .bind(&ns);
    if !q.labels.is_empty() {
        count = count.bind(&labels);
    }
    let total: i64 = count.fetch_one(&mut *conn).await?.try_get("n")?;
    let n = if q.labels.is_empty() { 3 } else { 4 };
    let sql = format!(
        "SELECT {COLUMNS} FROM resources WHERE {filter} ORDER BY seq LIMIT ${n} OFFSET ${}",
        n + 1
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kind.name())
        .bind(&ns);
    if !q.labels.is_empty() {
        rows = rows.bind(&labels);
    }
    let rows = rows
        .bind(q.limit)
        .bind(q.offset())
        .fetch_all(&mut *conn)
        .await?;
    let stored = rows
        .iter()
        .map(|r| store::decode(&st.keys, r))
        .collect::<ApiResult<Vec<_>>>()?;
    let items = present(&mut conn, kind, &stored).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": items, "meta": q.meta(total) }),
    ))
}

pub fn not_found(kind: Kind) -> ApiError {
    let mut e = ApiError::not_found(kind.singular());
    e.message = format!("{} not found", kind.singular());
    e
}

async fn fetch(State(st): State<S>, kind: Kind, Path(id): Path<String>) -> ApiResult<Response> {
    let mut conn = st.db.pool.acquire().await?;
    let s = store::by_id(&mut conn, &st.keys, kind, &id)
        .await?
        .ok_or_else(|| not_found(kind))?;
    Ok(data(StatusCode::OK, present_one(&mut conn, kind, s).await?))
}

async fn lookup(
    State(st): State<S>,
    kind: Kind,
    Path((ns, fid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let mut conn = st.db.pool.acquire().await?;
    let s = store::by_foreign_id(&mut conn, &st.keys, kind, &ns, &fid)
        .await?
        .ok_or_else(|| not_found(kind))?;
    Ok(data(StatusCode::OK, present_one(&mut conn, kind, s).await?))
}

/// `namespace` and `foreign_id` of a request body, validated (URL-safe, not an OID).
fn identity(kind: Kind, o: Obj<'_>, errs: &mut Errors) -> (Option<String>, Option<String>) {
    let mut check = |key: &str| {
        let v = o.string(key, SHORT, errs)?;
        if !url_safe(&v) {
            errs.add(key, "must be URL-safe: only A-Z a-z 0-9 - . _ ~");
            return None;
        }
        Some(v)
    };
    let ns = check("namespace");
    let fid = check("foreign_id");
    if let Some(f) = &fid
        && f.starts_with(kind.prefix())
    {
        errs.add(
            "foreign_id",
            format!("may not start with the id prefix {}", kind.prefix()),
        );
    }
    (ns, fid)
}

async fn create(State(st): State<S>, kind: Kind, body: JsonBody) -> ApiResult<Response> {
    let d = body.data()?;
    let mut errs = Errors::default();
    let (ns, fid) = identity(kind, Obj::new(&d, ""), &mut errs);
    errs.check()?;
    let ns = ns.unwrap_or_else(|| "default".to_owned());
    let mut tx = st.db.begin_write().await?;
    let v = save(&st, &mut tx, kind, None, &ns, fid.as_deref(), &d).await?;
    tx.commit().await?;
    Ok(data(StatusCode::CREATED, v))
}

async fn upsert(
    State(st): State<S>,
    kind: Kind,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let d = body.data()?;
    let o = Obj::new(&d, "");
    let mut errs = Errors::default();
    let (ns, fid) = identity(kind, o, &mut errs);
    errs.check()?;
    let mut tx = st.db.begin_write().await?;
    let (status, v) = if id.starts_with(kind.prefix()) {
        let ex = store::by_id(&mut tx, &st.keys, kind, &id)
            .await?
            .ok_or_else(|| not_found(kind))?;
        immutable(&ex, ns.as_deref(), fid.as_deref())?;
        let (ns, fid) = (ex.namespace.clone(), ex.foreign_id.clone());
        let v = save(&st, &mut tx, kind, Some(ex), &ns, fid.as_deref(), &d).await?;
        (StatusCode::OK, v)
    } else {
        if !url_safe(&id) {
            return Err(ApiError::invalid(
                "foreign_id",
                "must be URL-safe: only A-Z a-z 0-9 - . _ ~",
            ));
        }
        if fid.as_deref().is_some_and(|f| f != id) {
            return Err(ApiError::invalid(
                "foreign_id",
                "does not match the foreign_id in the URL",
            ));
        }
        let ns = ns.unwrap_or_else(|| "default".to_owned());
        match store::by_foreign_id(&mut tx, &st.keys, kind, &ns, &id).await? {
            Some(ex) => (
                StatusCode::OK,
                save(&st, &mut tx, kind, Some(ex), &ns, Some(&id), &d).await?,
            ),
            None => (
                StatusCode::CREATED,
                save(&st, &mut tx, kind, None, &ns, Some(&id), &d).await?,
            ),
        }
    };
    tx.commit().await?;
    Ok(data(status, v))
}

/// namespace and foreign_id are immutable once set.
fn immutable(ex: &Stored, ns: Option<&str>, fid: Option<&str>) -> ApiResult<()> {
    let mut errs = Errors::default();
    if ns.is_some_and(|n| n != ex.namespace) {
        errs.add("namespace", "can't be changed");
    }
    if let Some(f) = fid
        && ex.foreign_id.as_deref() != Some(f)
    {
        errs.add("foreign_id", "can't be changed");
    }
    errs.check()
}

/// Validates and writes a create (`existing` None) or update inside `tx`; returns the
/// representation of the record as written.
async fn save(
    st: &S,
    tx: &mut AnyConnection,
    kind: Kind,
    existing: Option<Stored>,
    ns: &str,
    fid: Option<&str>,
    d: &Map<String, Value>,
) -> ApiResult<Value> {
    let o = Obj::new(d, "");
    let mut errs = Errors::default();
    let labels = if o.has("labels") {
        labels(o, &mut errs).map(Value::Object)
    } else {
        None
    };
    let mut prepared = match model::prepare(kind, o, existing.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            errs.0.extend(e.0);
            Prepared::default()
        }
    };
    if kind == Kind::PgDsn && fid.is_none() {
        errs.add("foreign_id", "can't be blank");
    }
    if existing.is_none()
        && let Some(f) = fid
        && store::by_foreign_id(tx, &st.keys, kind, ns, f)
            .await?
            .is_some()
    {
        errs.add("foreign_id", "has already been taken");
    }
    errs.check()?;
    resolve_brokers(tx, &mut prepared).await?;
    let now = now_ms();
    let id = match &existing {
        Some(ex) => {
            let labels = labels.unwrap_or_else(|| ex.labels.clone());
            store::update(tx, &st.keys, &ex.id, &labels, &prepared, now).await?;
            ex.id.clone()
        }
        None => {
            let id = new_id(kind.prefix());
            let labels = labels.unwrap_or_else(|| json!({}));
            let row = NewRow {
                id: &id,
                kind,
                namespace: ns,
                foreign_id: fid,
                labels: &labels,
                now,
            };
            store::insert(tx, &st.keys, row, &prepared).await?;
            id
        }
    };
    write_broker_refs(tx, &id, &prepared).await?;
    if kind == Kind::Broker {
        crate::broker::on_write(tx, &st.keys, &id, existing.is_none(), &prepared, now).await?;
    }
    let s = store::by_id(tx, &st.keys, kind, &id)
        .await?
        .ok_or_else(ApiError::internal)?;
    present_one(tx, kind, s).await
}

/// Resolves every token_broker reference (by OID, or namespace + foreign_id) to a credential
/// id, recorded under the hidden `_brokers` map of the body.
async fn resolve_brokers(tx: &mut AnyConnection, p: &mut Prepared) -> ApiResult<()> {
    let mut errs = Errors::default();
    let mut resolved = p
        .body
        .get(BROKERS_KEY)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (slot, r) in &p.brokers {
        let id: Option<String> = match &r.namespace {
            None => {
                sqlx::query_scalar("SELECT id FROM resources WHERE id = $1 AND kind = $2")
                    .bind(&r.credential_id)
                    .bind(Kind::Broker.name())
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Some(ns) => sqlx::query_scalar(
                "SELECT id FROM resources WHERE kind = $1 AND namespace = $2 AND foreign_id = $3",
            )
            .bind(Kind::Broker.name())
            .bind(ns)
            .bind(&r.credential_id)
            .fetch_optional(&mut *tx)
            .await?,
        };
        match id {
            Some(id) => {
                resolved.insert(slot.clone(), Value::String(id));
            }
            None => errs.add(&r.field, "must reference an existing broker credential"),
        }
    }
    errs.check()?;
    // Slots that no longer hold a token_broker source drop their reference.
    resolved.retain(|slot, _| slot_is_broker(&p.body, slot));
    if resolved.is_empty() {
        p.body.remove(BROKERS_KEY);
    } else {
        p.body.insert(BROKERS_KEY.into(), Value::Object(resolved));
    }
    Ok(())
}

fn slot_is_broker(body: &Map<String, Value>, slot: &str) -> bool {
    let mut parts = slot.splitn(2, '.');
    let top = parts.next().unwrap_or("");
    let v = match (body.get(top), parts.next()) {
        (Some(v), None) => Some(v),
        (Some(v), Some(name)) => v.get(name),
        _ => None,
    };
    v.and_then(model::source::stored_type) == Some("token_broker")
}

async fn write_broker_refs(tx: &mut AnyConnection, id: &str, p: &Prepared) -> ApiResult<()> {
    sqlx::query("DELETE FROM broker_refs WHERE secret_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let mut ids: Vec<&str> = p
        .body
        .get(BROKERS_KEY)
        .and_then(Value::as_object)
        .map(|m| m.values().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    for c in ids {
        sqlx::query("INSERT INTO broker_refs (secret_id, credential_id) VALUES ($1, $2)")
            .bind(id)
            .bind(c)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn delete(State(st): State<S>, kind: Kind, Path(id): Path<String>) -> ApiResult<Response> {
    let mut tx = st.db.begin_write().await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM resources WHERE id = $1 AND kind = $2")
            .bind(&id)
            .bind(kind.name())
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(not_found(kind));
    }
    match kind {
        Kind::Broker => {
            let refs: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM broker_refs WHERE credential_id = $1")
                    .bind(&id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
            if refs > 0 {
                return Err(ApiError::conflict(
                    "broker_credential_in_use",
                    format!(
                        "broker credential is referenced by {refs} token_broker secret source(s); remove those references first"
                    ),
                ));
            }
        }
        Kind::Principal => {
            // Its proxies stay, unassigned.
            sqlx::query(
                "UPDATE proxies SET principal_id = NULL, principal_assigned_at = NULL, \
                 updated_at = $2 WHERE principal_id = $1",
            )
            .bind(&id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        _ => {}
    }
    sqlx::query("DELETE FROM resources WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(no_content())
}
