//! Broker credentials' refresh state and loop.
//!
//! Every replica runs the loop. A due credential is claimed with a conditional UPDATE that sets
//! a lease (`lease_until`, `lease_owner`): the UPDATE takes the row lock in PostgreSQL (and the
//! single writer lock in SQLite), and only the replica whose UPDATE matched refreshes it, so a
//! credential is refreshed once even with many replicas. A replica that dies mid-refresh loses
//! the lease when it expires and another one picks the credential up.

mod oauth;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};
use tokio::sync::watch;

use crate::crypto::Keyring;
use crate::error::ApiResult;
use crate::ids::{iso_opt, now_ms};
use crate::model::Prepared;
use crate::model::broker::Params;
use crate::state::AppState;

pub use oauth::{Outcome, TokenClient};

fn refresh_aad(id: &str) -> String {
    format!("broker_state:{id}:refresh")
}

fn access_aad(id: &str) -> String {
    format!("broker_state:{id}:access")
}

/// Creates the state row of a new credential; reseeds it when a refresh_token was supplied.
pub async fn on_write(
    tx: &mut AnyConnection,
    keys: &Keyring,
    id: &str,
    created: bool,
    p: &Prepared,
    now: i64,
) -> ApiResult<()> {
    let seed = p
        .refresh_token
        .as_ref()
        .map(|t| keys.seal(&refresh_aad(id), t.as_bytes()));
    if created {
        sqlx::query(
            "INSERT INTO broker_state (credential_id, refresh_sealed, next_attempt_at, dead, \
             failure_count) VALUES ($1, $2, $3, 0, 0)",
        )
        .bind(id)
        .bind(seed.clone())
        .bind(seed.as_ref().map(|_| now))
        .execute(&mut *tx)
        .await?;
    } else if let Some(seed) = seed {
        // Reseed: refresh now, clear the dead state, drop any in-flight lease so a refresh
        // started with the old token cannot overwrite this one.
        sqlx::query(
            "UPDATE broker_state SET refresh_sealed = $2, next_attempt_at = $3, dead = 0, \
             dead_reason = NULL, failure_count = 0, lease_until = NULL, lease_owner = NULL \
             WHERE credential_id = $1",
        )
        .bind(id)
        .bind(seed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The read-only refresh attributes of a credential's REST representation.
pub async fn state_json(conn: &mut AnyConnection, id: &str) -> ApiResult<Value> {
    let row = sqlx::query(
        "SELECT access_sealed IS NOT NULL AS has_token, expires_at, last_refresh, \
         next_attempt_at, dead, dead_reason, failure_count FROM broker_state WHERE credential_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else {
        return Ok(json!({"status": "bootstrapping"}));
    };
    let dead: i64 = r.try_get("dead")?;
    let has_token: i64 = flag(&r, "has_token")?;
    let status = if dead != 0 {
        "dead"
    } else if has_token != 0 {
        "live"
    } else {
        "bootstrapping"
    };
    Ok(json!({
        "status": status,
        "expires_at": iso_opt(r.try_get("expires_at")?),
        "last_refresh": iso_opt(r.try_get("last_refresh")?),
        "next_attempt_at": iso_opt(r.try_get("next_attempt_at")?),
        "dead": dead != 0,
        "dead_reason": r.try_get::<Option<String>, _>("dead_reason")?,
        "failure_count": r.try_get::<i64, _>("failure_count")?,
    }))
}

/// A boolean expression column: BOOLEAN in PostgreSQL, INTEGER in SQLite.
fn flag(r: &sqlx::any::AnyRow, col: &str) -> Result<i64, sqlx::Error> {
    r.try_get::<i64, _>(col)
        .or_else(|_| r.try_get::<bool, _>(col).map(i64::from))
}

/// Current access tokens of the live credentials among `ids` (not dead, not expired).
pub async fn live_tokens(
    conn: &mut AnyConnection,
    keys: &Keyring,
    ids: &[String],
) -> ApiResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let params: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT credential_id, access_sealed FROM broker_state WHERE dead = 0 \
         AND access_sealed IS NOT NULL AND expires_at > $1 AND credential_id IN ({})",
        params.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
    for id in ids {
        q = q.bind(id);
    }
    for r in q.fetch_all(&mut *conn).await? {
        let id: String = r.try_get("credential_id")?;
        let blob: Vec<u8> = r.try_get("access_sealed")?;
        let token = keys.open(&access_aad(&id), &blob)?;
        out.insert(id, String::from_utf8_lossy(&token).into_owned());
    }
    Ok(out)
}

/// How often the loop looks for due credentials, and the retry backoff bounds.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    pub tick: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Runs until `shutdown` flips to true.
pub async fn run(
    st: Arc<AppState>,
    opts: LoopOptions,
    replica: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match TokenClient::new() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "broker refresh loop disabled: no HTTP client");
            return;
        }
    };
    loop {
        if let Err(e) = tick(&st, &opts, &replica, &client).await {
            tracing::warn!(error = %e, "broker refresh pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.tick) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn tick(
    st: &AppState,
    opts: &LoopOptions,
    replica: &str,
    client: &TokenClient,
) -> ApiResult<()> {
    let now = now_ms();
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT credential_id FROM broker_state WHERE dead = 0 AND refresh_sealed IS NOT NULL \
         AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1) \
         ORDER BY next_attempt_at LIMIT 16",
    )
    .bind(now)
    .fetch_all(&st.db.pool)
    .await?;
    for id in due {
        if let Some(job) = claim(st, &id, replica).await? {
            refresh_one(st, opts, replica, client, job).await?;
        }
    }
    Ok(())
}

struct Job {
    id: String,
    params: Params,
    refresh_token: String,
    client_secret: Option<String>,
    headers: Vec<(String, String)>,
    failures: i64,
}

/// Takes the lease on `id` if it is still due and unleased; loads what the refresh needs.
async fn claim(st: &AppState, id: &str, replica: &str) -> ApiResult<Option<Job>> {
    let now = now_ms();
    let mut tx = st.db.begin_write().await?;
    let lease_ms = 330_000; // > the longest refresh_timeout_seconds (300)
    let claimed = sqlx::query(
        "UPDATE broker_state SET lease_until = $2, lease_owner = $3 WHERE credential_id = $1 \
         AND dead = 0 AND refresh_sealed IS NOT NULL AND next_attempt_at <= $4 \
         AND (lease_until IS NULL OR lease_until < $4)",
    )
    .bind(id)
    .bind(now + lease_ms)
    .bind(replica)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed != 1 {
        return Ok(None);
    }
    let r = sqlx::query(
        "SELECT s.refresh_sealed, s.failure_count, r.body, r.sealed FROM broker_state s \
         JOIN resources r ON r.id = s.credential_id WHERE s.credential_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let refresh = st.keys.open(
        &refresh_aad(id),
        &r.try_get::<Vec<u8>, _>("refresh_sealed")?,
    )?;
    let body = crate::store::parse_json(&r.try_get::<String, _>("body")?)?;
    let sealed = match r.try_get::<Option<Vec<u8>>, _>("sealed")? {
        Some(b) => st.keys.open_json(&format!("resources:{id}"), &b)?,
        None => json!({}),
    };
    let sealed = sealed.as_object().cloned().unwrap_or_default();
    let headers = sealed
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("token_endpoint_headers.")?;
            Some((name.to_owned(), v.as_str()?.to_owned()))
        })
        .collect();
    Ok(Some(Job {
        id: id.to_owned(),
        params: Params::from_body(body.as_object().unwrap_or(&serde_json::Map::new())),
        refresh_token: String::from_utf8_lossy(&refresh).into_owned(),
        client_secret: sealed
            .get("client_secret")
            .and_then(Value::as_str)
            .map(str::to_owned),
        headers,
        failures: r.try_get("failure_count")?,
    }))
}

/// When to refresh a token of `lifetime_s`: `max(slack, fraction * lifetime)` before expiry,
/// at most `max_interval` from now, halfway through when the early margin exceeds the lifetime.
pub fn refresh_delay_ms(p: &Params, lifetime_s: i64) -> i64 {
    let lifetime = lifetime_s.max(1) as f64;
    let early = (p.slack_s as f64).max(p.fraction * lifetime);
    let mut delay = lifetime - early;
    if delay <= 0.0 {
        delay = lifetime / 2.0;
    }
    let delay_ms = (delay * 1000.0) as i64;
    delay_ms.clamp(500, p.max_interval_s.saturating_mul(1000))
}

fn backoff_ms(opts: &LoopOptions, failures: i64) -> i64 {
    let exp = failures.clamp(0, 20) as u32;
    let base = opts.backoff_base.as_millis() as i64;
    let max = opts.backoff_max.as_millis() as i64;
    let d = base.saturating_mul(1i64 << exp).min(max);
    // ±10 % jitter keeps replicas' retries from lining up.
    let jitter = (d / 10).max(1);
    d + rand::random_range(-jitter..=jitter)
}

async fn refresh_one(
    st: &AppState,
    opts: &LoopOptions,
    replica: &str,
    client: &TokenClient,
    job: Job,
) -> ApiResult<()> {
    let outcome = client.refresh(&job).await;
    let now = now_ms();
    let mut tx = st.db.begin_write().await?;
    let owned = "credential_id = $1 AND lease_owner = $2";
    let rows = match &outcome {
        Outcome::Token(t) => {
            let lifetime = t.expires_in.unwrap_or(job.params.max_interval_s);
            let refresh = t.refresh_token.as_deref().unwrap_or(&job.refresh_token);
            tracing::info!(credential_id = %job.id, expires_in = lifetime, "broker credential refreshed");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE broker_state SET access_sealed = $3, refresh_sealed = $4, expires_at = $5, \
                 last_refresh = $6, next_attempt_at = $7, failure_count = 0, dead = 0, \
                 dead_reason = NULL, lease_until = NULL, lease_owner = NULL WHERE {owned}"
            )))
            .bind(&job.id)
            .bind(replica)
            .bind(
                st.keys
                    .seal(&access_aad(&job.id), t.access_token.as_bytes()),
            )
            .bind(st.keys.seal(&refresh_aad(&job.id), refresh.as_bytes()))
            .bind(now + lifetime.saturating_mul(1000))
            .bind(now)
            .bind(now + refresh_delay_ms(&job.params, lifetime))
            .execute(&mut *tx)
            .await?
        }
        Outcome::Dead(reason) => {
            tracing::warn!(credential_id = %job.id, reason = %reason, "broker credential is dead; it needs a new refresh_token");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE broker_state SET dead = 1, dead_reason = $3, access_sealed = NULL, \
                 next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL WHERE {owned}"
            )))
            .bind(&job.id)
            .bind(replica)
            .bind(reason)
            .execute(&mut *tx)
            .await?
        }
        Outcome::Retry(why) => {
            let failures = job.failures + 1;
            let next = now + backoff_ms(opts, failures - 1);
            tracing::warn!(credential_id = %job.id, error = %why, failure_count = failures, "broker credential refresh failed; will retry");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE broker_state SET failure_count = $3, next_attempt_at = $4, \
                 lease_until = NULL, lease_owner = NULL WHERE {owned}"
            )))
            .bind(&job.id)
            .bind(replica)
            .bind(failures)
            .bind(next)
            .execute(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    if rows.rows_affected() == 0 {
        tracing::info!(credential_id = %job.id, "refresh result dropped: the credential was reseeded or deleted meanwhile");
    }
    Ok(())
}

/// Re-encrypts refresh and access tokens not yet under the current key.
pub async fn reseal_all(conn: &mut AnyConnection, keys: &Keyring) -> ApiResult<usize> {
    let rows = sqlx::query("SELECT credential_id, refresh_sealed, access_sealed FROM broker_state")
        .fetch_all(&mut *conn)
        .await?;
    let mut n = 0;
    for r in rows {
        let id: String = r.try_get("credential_id")?;
        for (col, aad) in [
            ("refresh_sealed", refresh_aad(&id)),
            ("access_sealed", access_aad(&id)),
        ] {
            let Some(blob) = r.try_get::<Option<Vec<u8>>, _>(col)? else {
                continue;
            };
            if keys.is_current(&blob) {
                continue;
            }
            let plain = keys.open(&aad, &blob)?;
            let sql = format!("UPDATE broker_state SET {col} = $2 WHERE credential_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&id)
                .bind(keys.seal(&aad, &plain))
                .execute(&mut *conn)
                .await?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(slack: i64, fraction: f64, max: i64) -> Params {
        Params {
            token_endpoint: String::new(),
            scopes: vec![],
            client_id: String::new(),
            slack_s: slack,
            fraction,
            max_interval_s: max,
            timeout_s: 30,
        }
    }

    #[test]
    fn early_refresh_schedule() {
        // 1 h token, slack 300 s, fraction 0.2 (720 s): refresh 720 s before expiry.
        assert_eq!(refresh_delay_ms(&params(300, 0.2, 86_400), 3600), 2_880_000);
        // slack wins when larger.
        assert_eq!(
            refresh_delay_ms(&params(1000, 0.2, 86_400), 3600),
            2_600_000
        );
        // capped by max_refresh_interval_seconds.
        assert_eq!(refresh_delay_ms(&params(300, 0.2, 600), 3600), 600_000);
        // margin larger than the lifetime: halfway.
        assert_eq!(refresh_delay_ms(&params(300, 0.2, 86_400), 60), 30_000);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let o = LoopOptions::default();
        let b0 = backoff_ms(&o, 0);
        assert!((900..=1100).contains(&b0));
        let b3 = backoff_ms(&o, 3);
        assert!((7200..=8800).contains(&b3));
        assert!(backoff_ms(&o, 30) <= 330_000);
    }
}
