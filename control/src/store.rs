//! Rows of the `resources` table: load (opening sealed values), insert, update, delete, list.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::crypto::Keyring;
use crate::error::{ApiError, ApiResult};
use crate::model::{Kind, Prepared, Stored};

pub const COLUMNS: &str = "id, namespace, foreign_id, labels, body, sealed, created_at, updated_at";

fn aad(id: &str) -> String {
    format!("resources:{id}")
}

pub fn parse_json(text: &str) -> ApiResult<Value> {
    serde_json::from_str(text).map_err(|e| {
        tracing::error!(error = %e, "stored JSON is malformed");
        ApiError::internal()
    })
}

pub fn decode(keys: &Keyring, row: &AnyRow) -> ApiResult<Stored> {
    let id: String = row.try_get("id")?;
    let body = match parse_json(&row.try_get::<String, _>("body")?)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let sealed = match row.try_get::<Option<Vec<u8>>, _>("sealed")? {
        Some(blob) => match keys.open_json(&aad(&id), &blob)? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        None => Map::new(),
    };
    Ok(Stored {
        namespace: row.try_get("namespace")?,
        foreign_id: row.try_get("foreign_id")?,
        labels: parse_json(&row.try_get::<String, _>("labels")?)?,
        body,
        sealed,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

pub async fn by_id(
    conn: &mut AnyConnection,
    keys: &Keyring,
    kind: Kind,
    id: &str,
) -> ApiResult<Option<Stored>> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE id = $1 AND kind = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(kind.name())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| decode(keys, &r)).transpose()
}

pub async fn by_foreign_id(
    conn: &mut AnyConnection,
    keys: &Keyring,
    kind: Kind,
    namespace: &str,
    foreign_id: &str,
) -> ApiResult<Option<Stored>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources WHERE kind = $1 AND namespace = $2 AND foreign_id = $3"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kind.name())
        .bind(namespace)
        .bind(foreign_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| decode(keys, &r)).transpose()
}

fn seal(keys: &Keyring, id: &str, sealed: &Map<String, Value>) -> Option<Vec<u8>> {
    (!sealed.is_empty()).then(|| keys.seal_json(&aad(id), &Value::Object(sealed.clone())))
}

pub struct NewRow<'a> {
    pub id: &'a str,
    pub kind: Kind,
    pub namespace: &'a str,
    pub foreign_id: Option<&'a str>,
    pub labels: &'a Value,
    pub now: i64,
}

pub async fn insert(
    conn: &mut AnyConnection,
    keys: &Keyring,
    row: NewRow<'_>,
    p: &Prepared,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO resources (id, kind, namespace, foreign_id, labels, body, sealed, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(row.id)
    .bind(row.kind.name())
    .bind(row.namespace)
    .bind(row.foreign_id)
    .bind(row.labels.to_string())
    .bind(Value::Object(p.body.clone()).to_string())
    .bind(seal(keys, row.id, &p.sealed))
    .bind(row.now)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::invalid("foreign_id", "has already been taken")
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

pub async fn update(
    conn: &mut AnyConnection,
    keys: &Keyring,
    id: &str,
    labels: &Value,
    p: &Prepared,
    now: i64,
) -> ApiResult<()> {
    sqlx::query(
        "UPDATE resources SET labels = $2, body = $3, sealed = $4, updated_at = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(labels.to_string())
    .bind(Value::Object(p.body.clone()).to_string())
    .bind(seal(keys, id, &p.sealed))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Re-encrypts every sealed blob not yet under the current key (server key rotation).
pub async fn reseal_all(conn: &mut AnyConnection, keys: &Keyring) -> ApiResult<usize> {
    let rows = sqlx::query("SELECT id, sealed FROM resources WHERE sealed IS NOT NULL")
        .fetch_all(&mut *conn)
        .await?;
    let mut n = 0;
    for r in rows {
        let id: String = r.try_get("id")?;
        let blob: Vec<u8> = r.try_get("sealed")?;
        if keys.is_current(&blob) {
            continue;
        }
        let plain = keys.open(&aad(&id), &blob)?;
        sqlx::query("UPDATE resources SET sealed = $2 WHERE id = $1")
            .bind(&id)
            .bind(keys.seal(&aad(&id), &plain))
            .execute(&mut *conn)
            .await?;
        n += 1;
    }
    Ok(n)
}
