//! The config a proxy receives: its principal's effective grants (direct and through roles,
//! ascending grant priority, each secret once) plus the active policies whose match tags are
//! all among the proxy's tags, and the `config_hash` over all of it.
//!
//! Served from indexes: the proxy by token hash, grants by principal and by role, broker
//! tokens by credential id, active policies by (active, priority).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::crypto::Keyring;
use crate::error::ApiResult;
use crate::model::deliver::{Item, Resolver};
use crate::model::{BROKERS_KEY, Kind, Stored};
use crate::store;

/// The delivered config, before `config_hash`, `status` and `principal_id` are added.
#[derive(Debug, Default)]
pub struct Config {
    pub secrets: Vec<Value>,
    pub transforms: Vec<Value>,
    pub postgres: Vec<Value>,
    pub rules: Vec<Value>,
    pub mcp_servers: Vec<Value>,
}

/// The secrets granted to `principal`, each once, in ascending grant priority (a secret
/// granted twice takes the position of its last grant: "last one wins").
pub fn grants_sql() -> String {
    let cols = "r.id, r.namespace, r.foreign_id, r.labels, r.body, r.sealed, r.created_at, \
                r.updated_at, r.kind, g.priority AS gprio, g.seq AS gseq";
    format!(
        "SELECT {cols} FROM grants g JOIN resources r ON r.id = g.secret_id \
         WHERE g.principal_id = $1 \
         UNION ALL \
         SELECT {cols} FROM principal_roles pr JOIN grants g ON g.role_id = pr.role_id \
         JOIN resources r ON r.id = g.secret_id WHERE pr.principal_id = $1 \
         ORDER BY gprio, gseq"
    )
}

/// The proxy row a sync starts from, by token hash.
pub const PROXY_SQL: &str = "SELECT id, principal_id, principal_assigned_at, tags, deleted_at, \
                             ingest_token_hash FROM proxies WHERE token_hash = $1";

/// Active policies, in delivery order.
pub const POLICIES_SQL: &str =
    "SELECT kind, name, match_tags, body FROM policies WHERE active = 1 ORDER BY priority, seq";

pub async fn granted(
    conn: &mut AnyConnection,
    keys: &Keyring,
    principal: &str,
) -> ApiResult<Vec<(Kind, Stored)>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(grants_sql()))
        .bind(principal)
        .fetch_all(&mut *conn)
        .await?;
    let mut out: Vec<(Kind, Stored)> = Vec::with_capacity(rows.len());
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        last.insert(r.try_get("id")?, i);
    }
    for (i, r) in rows.iter().enumerate() {
        let id: String = r.try_get("id")?;
        if last.get(&id) != Some(&i) {
            continue;
        }
        let Some(kind) = Kind::from_name(&r.try_get::<String, _>("kind")?) else {
            continue;
        };
        out.push((kind, store::decode(keys, r)?));
    }
    Ok(out)
}

/// Assembles the grant part of a config. `redact` renders inline values as `[redacted]`.
pub async fn from_grants(
    conn: &mut AnyConnection,
    keys: &Keyring,
    grants: &[(Kind, Stored)],
    redact: bool,
    cfg: &mut Config,
) -> ApiResult<()> {
    let mut ids: Vec<String> = grants
        .iter()
        .filter_map(|(_, s)| s.body.get(BROKERS_KEY).and_then(Value::as_object))
        .flat_map(|m| m.values().filter_map(Value::as_str).map(str::to_owned))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let tokens = crate::broker::live_tokens(conn, keys, &ids).await?;
    let r = Resolver {
        tokens: &tokens,
        redact,
    };
    let mut oauth = Vec::new();
    for (kind, s) in grants {
        match r.item(*kind, s) {
            Some(Item::Secret(v)) => cfg.secrets.push(v),
            Some(Item::Transform(v)) => cfg.transforms.push(v),
            Some(Item::OauthToken(v)) => oauth.push(v),
            Some(Item::Postgres(v)) => cfg.postgres.push(v),
            None => {}
        }
    }
    if !oauth.is_empty() {
        cfg.transforms
            .push(json!({"name": "oauth_token", "config": {"tokens": oauth}}));
    }
    Ok(())
}

/// Adds the active policies whose match tags are all among `tags`, by ascending priority.
pub async fn from_policies(
    conn: &mut AnyConnection,
    tags: &[String],
    cfg: &mut Config,
) -> ApiResult<()> {
    let rows = sqlx::query(POLICIES_SQL).fetch_all(&mut *conn).await?;
    let have: HashSet<&str> = tags.iter().map(String::as_str).collect();
    for r in rows {
        let match_tags = store::parse_json(&r.try_get::<String, _>("match_tags")?)?;
        let applies = match_tags.as_array().is_some_and(|m| {
            m.iter()
                .all(|t| t.as_str().is_some_and(|t| have.contains(t)))
        });
        if !applies {
            continue;
        }
        let body = store::parse_json(&r.try_get::<String, _>("body")?)?;
        let name: String = r.try_get("name")?;
        match r.try_get::<String, _>("kind")?.as_str() {
            "network" => cfg
                .rules
                .extend(crate::policies::deliver_rules(body.get("rules"))),
            "secrets" => cfg.secrets.push(crate::policies::deliver_secret(&body)),
            "mcp" => {
                if let Some(s) = crate::policies::deliver_mcp(&name, &body) {
                    cfg.mcp_servers.push(s);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `"sha256:" + hex(SHA-256(canonical JSON))`, canonical = object keys sorted, no spaces.
pub fn hash(v: &Value) -> String {
    let mut s = String::new();
    canonical(v, &mut s);
    format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes())))
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl Config {
    /// The full sync payload. The hash covers the delivered config plus the principal
    /// assignment (its id and when it was made), so any (re)assignment changes it.
    pub fn payload(self, principal: Option<&str>, assigned_at: Option<i64>) -> Value {
        let mut body = Map::new();
        body.insert(
            "status".into(),
            json!(if principal.is_some() {
                "assigned"
            } else {
                "unassigned"
            }),
        );
        body.insert("principal_id".into(), json!(principal));
        body.insert("secrets".into(), Value::Array(self.secrets));
        body.insert("transforms".into(), Value::Array(self.transforms));
        body.insert("postgres".into(), Value::Array(self.postgres));
        body.insert("rules".into(), Value::Array(self.rules));
        body.insert("mcp".into(), json!({ "servers": self.mcp_servers }));
        let mut hashed = Value::Object(body.clone());
        hashed["principal_assigned_at"] = json!(assigned_at);
        let mut out = Map::new();
        out.insert("config_hash".into(), json!(hash(&hashed)));
        out.extend(body);
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query a sync runs is answered from an index: SQLite's plan has no full-table
    /// `SCAN` of proxies, grants, principal_roles, resources or broker_state.
    #[tokio::test]
    async fn sync_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let db = crate::db::Db::connect(&url, 1).await.unwrap();
        db.migrate().await.unwrap();
        let tokens_sql = "SELECT credential_id, access_sealed FROM broker_state WHERE dead = 0 \
             AND access_sealed IS NOT NULL AND expires_at > $1 AND credential_id IN ($2, $3)";
        for sql in [
            grants_sql(),
            PROXY_SQL.to_owned(),
            POLICIES_SQL.to_owned(),
            tokens_sql.to_owned(),
        ] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("x")
                .bind("y")
                .bind("z")
                .fetch_all(&db.pool)
                .await
                .unwrap();
            let plan: Vec<String> = rows
                .iter()
                .map(|r| r.try_get::<String, _>("detail").unwrap())
                .collect();
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN "),
                    "full scan in the plan of {sql}: {plan:?}"
                );
            }
        }
    }

    #[test]
    fn hash_ignores_key_order_and_tracks_content() {
        let a = json!({"b": 1, "a": [1, {"y": 2, "x": 1}]});
        let b = json!({"a": [1, {"x": 1, "y": 2}], "b": 1});
        assert_eq!(hash(&a), hash(&b));
        assert!(hash(&a).starts_with("sha256:"));
        assert_ne!(hash(&a), hash(&json!({"b": 2, "a": [1, {"y": 2, "x": 1}]})));
    }
}
