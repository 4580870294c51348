//! Synced PostgreSQL upstreams layered onto the local proxy (iron-proxy §21.5).
//!
//! A sync answer's `postgres` array carries `{id, foreign_id, database, dsn, role?, settings?}`
//! entries (iron-control sends one per granted PG DSN secret). Each is checked on its own: an
//! invalid entry is skipped and logged, a database already seen is skipped, the rest become
//! upstreams. They are added to the local `postgres:` block (a local upstream wins on a
//! database collision); without a local block the listener and the client credential come from
//! `IRON_PROXY_PG_LISTEN`, `IRON_PROXY_PG_CLIENT_USER` and `IRON_PROXY_PG_CLIENT_PASSWORD`
//! (all three, else synced upstreams are ignored, as iron-proxy does).

use std::collections::HashSet;

use serde_json::Value;

use crate::config::ListenAddr;
use crate::config::postgres::{ClientConfig, PostgresConfig, UpstreamConfig};

pub const LISTEN_ENV: &str = "IRON_PROXY_PG_LISTEN";
pub const USER_ENV: &str = "IRON_PROXY_PG_CLIENT_USER";
pub const PASSWORD_ENV: &str = "IRON_PROXY_PG_CLIENT_PASSWORD";

/// What synced upstreams are layered onto.
#[derive(Debug, Clone)]
pub enum Base {
    /// The local YAML block.
    Local(PostgresConfig),
    /// No local block: listener and credential from the `IRON_PROXY_PG_*` environment.
    Env(PostgresConfig),
    /// Neither: synced upstreams are ignored.
    None,
}

/// A bad `IRON_PROXY_PG_LISTEN` (a startup error naming the variable).
#[derive(Debug, thiserror::Error)]
#[error("{LISTEN_ENV}: {0}")]
pub struct BaseError(String);

impl Base {
    /// The base for `local` (the YAML block after env overrides) and the environment.
    pub fn resolve(
        local: &PostgresConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, BaseError> {
        if !local.is_disabled() {
            return Ok(Self::Local(local.clone()));
        }
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let (Some(listen), Some(user), Some(_)) =
            (get(LISTEN_ENV), get(USER_ENV), get(PASSWORD_ENV))
        else {
            return Ok(Self::None);
        };
        let listen: ListenAddr = listen.parse().map_err(BaseError)?;
        Ok(Self::Env(PostgresConfig {
            listen: Some(listen),
            client: ClientConfig {
                user,
                // The proxy reads the password from this variable when it builds a session.
                password_env: PASSWORD_ENV.into(),
                ..ClientConfig::default()
            },
            ..PostgresConfig::default()
        }))
    }

    /// The block in force with `synced` upstreams: local upstreams first and winning on a
    /// database collision. An environment base with no upstream is a disabled proxy.
    pub fn layer(&self, synced: &[UpstreamConfig]) -> PostgresConfig {
        let mut out = match self {
            Self::Local(b) | Self::Env(b) => b.clone(),
            Self::None => return PostgresConfig::default(),
        };
        for u in synced {
            if out.upstream(&u.database).is_none() {
                out.upstreams.push(u.clone());
            }
        }
        if out.upstreams.is_empty() && matches!(self, Self::Env(_)) {
            return PostgresConfig::default();
        }
        out
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

/// The usable entries of a synced `postgres` value, and why each other entry was skipped
/// (messages name the entry and field; they may quote a value, so callers redact them).
pub fn entries(value: &Value) -> Result<(Vec<UpstreamConfig>, Vec<String>), String> {
    let Some(items) = value.as_array() else {
        return Err("postgres: expected an array".into());
    };
    let mut out: Vec<UpstreamConfig> = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("postgres[{i}]");
        match entry(item, &path) {
            Ok(u) if !seen.insert(u.database.clone()) => {
                skipped.push(format!("{path}: duplicate database {:?}", u.database));
            }
            Ok(u) => out.push(u),
            Err(e) => skipped.push(e),
        }
    }
    Ok((out, skipped))
}

fn entry(item: &Value, path: &str) -> Result<UpstreamConfig, String> {
    let Some(map) = item.as_object() else {
        return Err(format!("{path}: expected an object"));
    };
    let mut map = map.clone();
    // The control plane's keys for the entry itself; not part of an upstream.
    map.remove("id");
    let foreign_id = map.remove("foreign_id");
    if foreign_id
        .as_ref()
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!("{path}: foreign_id is required"));
    }
    // The local block's strict decoder: it names unknown keys and bad types.
    let upstream: UpstreamConfig =
        serde_json::from_value(Value::Object(map)).map_err(|e| format!("{path}: {e}"))?;
    let mut errors = Vec::new();
    upstream.validate(path, &mut errors);
    match errors.is_empty() {
        true => Ok(upstream),
        false => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn dsn(db: &str) -> Value {
        json!({"type": "control_plane", "value": format!("postgres://u:p@db.test:5432/{db}")})
    }

    #[test]
    fn valid_entries_pass_and_bad_ones_are_skipped_with_their_field() {
        let v = json!([
            {"id": "pgs_1", "foreign_id": "a", "database": "appdb", "dsn": dsn("appdb"), "role": "r",
             "settings": [{"name": "app.tenant", "value": "acme"}]},
            {"id": "pgs_2", "database": "nofid", "dsn": dsn("nofid")},
            {"id": "pgs_3", "foreign_id": "c", "dsn": dsn("x")},
            {"id": "pgs_4", "foreign_id": "d", "database": "nodsn"},
            {"id": "pgs_5", "foreign_id": "e", "database": "appdb", "dsn": dsn("appdb")},
            {"id": "pgs_6", "foreign_id": "f", "database": "bad", "dsn": dsn("bad"),
             "settings": [{"name": "role", "value": "admin"}]},
            {"id": "pgs_7", "foreign_id": "g", "database": "extra", "dsn": dsn("extra"), "bogus": 1},
            "not an object",
        ]);
        let (ok, skipped) = entries(&v).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].database, "appdb");
        assert_eq!(ok[0].role.as_deref(), Some("r"));
        let want = [
            "postgres[1]: foreign_id is required",
            "postgres[2]: database is required",
            "postgres[3]: dsn is required",
            "postgres[4]: duplicate database \"appdb\"",
            "postgres[5]: settings[0]",
            "bogus",
            "postgres[7]: expected an object",
        ];
        assert_eq!(skipped.len(), want.len(), "{skipped:?}");
        for (s, w) in skipped.iter().zip(want) {
            assert!(s.contains(w), "{s:?} should contain {w:?}");
        }
        assert!(entries(&json!({"x": 1})).is_err());
    }

    #[test]
    fn local_block_wins_and_env_base_needs_all_three_variables() {
        let local: PostgresConfig = serde_saphyr::from_str(
            "listen: '127.0.0.1:0'\nclient: {user: app, password_env: PW}\nupstreams:\n- {database: appdb, dsn: {type: env, var: D}}\n",
        )
        .unwrap();
        let (synced, _) = entries(&json!([
            {"foreign_id": "a", "database": "appdb", "dsn": dsn("appdb"), "role": "synced"},
            {"foreign_id": "b", "database": "other", "dsn": dsn("other")},
        ]))
        .unwrap();
        let base = Base::resolve(&local, &env(&[])).unwrap();
        let out = base.layer(&synced);
        let dbs: Vec<_> = out.upstreams.iter().map(|u| u.database.as_str()).collect();
        assert_eq!(dbs, ["appdb", "other"]);
        assert_eq!(out.role_for("appdb"), None, "the local upstream wins");

        let off = PostgresConfig::default();
        assert!(
            Base::resolve(
                &off,
                &env(&[(LISTEN_ENV, "127.0.0.1:0"), (USER_ENV, "app")])
            )
            .unwrap()
            .is_none()
        );
        assert!(Base::None.layer(&synced).is_disabled());
        let all = env(&[
            (LISTEN_ENV, "127.0.0.1:0"),
            (USER_ENV, "app"),
            (PASSWORD_ENV, "pw"),
        ]);
        let base = Base::resolve(&off, &all).unwrap();
        let out = base.layer(&synced);
        assert_eq!(out.client.user, "app");
        assert_eq!(out.client.password_env, PASSWORD_ENV);
        assert_eq!(out.upstreams.len(), 2);
        assert!(base.layer(&[]).is_disabled(), "no upstream: no listener");
        let bad = env(&[
            (LISTEN_ENV, "nope"),
            (USER_ENV, "app"),
            (PASSWORD_ENV, "pw"),
        ]);
        let e = Base::resolve(&off, &bad).unwrap_err();
        assert!(e.to_string().starts_with(LISTEN_ENV), "{e}");
    }
}
