//! What a proxy receives for one granted secret, in iron-proxy's YAML shapes: a `secrets`
//! entry, a transform (`gcp_auth`, `hmac_sign`), an `oauth_token` tokens entry, or a
//! `postgres` upstream.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::source::{Inline, flatten};
use super::{BROKERS_KEY, Kind, Stored, rules};

pub enum Item {
    Secret(Value),
    Transform(Value),
    OauthToken(Value),
    Postgres(Value),
}

/// How write-only values are rendered: inline (proxy sync) or `[redacted]` (effective config).
pub struct Resolver<'a> {
    /// Broker credential id -> current access token, for live credentials only.
    pub tokens: &'a HashMap<String, String>,
    pub redact: bool,
}

/// Unresolvable: a token_broker source whose credential has no current token.
struct NotLive;

impl Resolver<'_> {
    fn source(&self, s: &Stored, slot: &str, stored: &Value) -> Result<Value, NotLive> {
        let ty = super::source::stored_type(stored).unwrap_or("");
        let inline = match ty {
            "control_plane" if self.redact => Inline::Redacted,
            "control_plane" => match s.sealed.get(slot).and_then(Value::as_str) {
                Some(v) => Inline::Value(v),
                None => Inline::Redacted,
            },
            "token_broker" => {
                let id = s
                    .body
                    .get(BROKERS_KEY)
                    .and_then(|b| b.get(slot))
                    .and_then(Value::as_str)
                    .ok_or(NotLive)?;
                let token = self.tokens.get(id).ok_or(NotLive)?;
                if self.redact {
                    Inline::Redacted
                } else {
                    Inline::Value(token)
                }
            }
            _ => Inline::None,
        };
        Ok(flatten(stored, inline))
    }

    fn source_at(&self, s: &Stored, key: &str) -> Result<Option<Value>, NotLive> {
        match s.body.get(key) {
            Some(v) if !v.is_null() => self.source(s, key, v).map(Some),
            _ => Ok(None),
        }
    }

    fn source_map(&self, s: &Stored, key: &str) -> Result<Map<String, Value>, NotLive> {
        let mut out = Map::new();
        if let Some(Value::Object(m)) = s.body.get(key) {
            for (name, v) in m {
                out.insert(name.clone(), self.source(s, &format!("{key}.{name}"), v)?);
            }
        }
        Ok(out)
    }

    /// None when the secret is not delivered (sourceless static secret, broker not live).
    pub fn item(&self, kind: Kind, s: &Stored) -> Option<Item> {
        let r = match kind {
            Kind::Static => self.static_secret(s),
            Kind::Gcp => self.gcp(s),
            Kind::Oauth => self.oauth(s),
            Kind::PgDsn => self.pg_dsn(s),
            Kind::Hmac => self.hmac(s),
            _ => Ok(None),
        };
        r.ok().flatten()
    }

    fn static_secret(&self, s: &Stored) -> Result<Option<Item>, NotLive> {
        let Some(source) = self.source_at(s, "source")? else {
            return Ok(None);
        };
        let mut e = Map::new();
        e.insert("source".into(), source);
        if let Some(i) = nonnull(s, "inject_config") {
            e.insert("inject".into(), i.clone());
        }
        if let Some(r) = nonnull(s, "replace_config") {
            e.insert("replace".into(), r.clone());
        }
        e.insert("rules".into(), rules_of(s));
        Ok(Some(Item::Secret(Value::Object(e))))
    }

    fn gcp(&self, s: &Stored) -> Result<Option<Item>, NotLive> {
        let mut c = Map::new();
        if let Some(k) = self.source_at(s, "keyfile")? {
            c.insert("keyfile".into(), k);
        }
        copy(s, &mut c, &["credentials_provider", "subject", "scopes"]);
        c.insert("rules".into(), rules_of(s));
        Ok(Some(Item::Transform(
            json!({"name": "gcp_auth", "config": c}),
        )))
    }

    fn oauth(&self, s: &Stored) -> Result<Option<Item>, NotLive> {
        let mut t = Map::new();
        copy(s, &mut t, &["grant", "token_endpoint"]);
        for (name, v) in self.source_map(s, "credentials")? {
            t.insert(name, v);
        }
        copy(s, &mut t, &["audience", "scopes", "header", "value_prefix"]);
        let headers = self.source_map(s, "token_endpoint_headers")?;
        if !headers.is_empty() {
            t.insert("token_endpoint_headers".into(), Value::Object(headers));
        }
        t.insert("rules".into(), rules_of(s));
        Ok(Some(Item::OauthToken(Value::Object(t))))
    }

    fn hmac(&self, s: &Stored) -> Result<Option<Item>, NotLive> {
        let str_of = |k: &str| s.body.get(k).cloned().unwrap_or(Value::Null);
        let mut c = Map::new();
        c.insert(
            "credentials".into(),
            Value::Object(self.source_map(s, "credentials")?),
        );
        c.insert(
            "timestamp".into(),
            json!({"format": str_of("timestamp_format")}),
        );
        c.insert(
            "signature".into(),
            json!({
                "algorithm": str_of("signature_algorithm"),
                "key_encoding": str_of("signature_key_encoding"),
                "output_encoding": str_of("signature_output_encoding"),
                "message": str_of("signature_message"),
            }),
        );
        c.insert("headers".into(), str_of("headers"));
        if s.body.get("allow_chunked_body") == Some(&Value::Bool(true)) {
            c.insert("allow_chunked_body".into(), Value::Bool(true));
        }
        c.insert("rules".into(), rules_of(s));
        Ok(Some(Item::Transform(
            json!({"name": "hmac_sign", "config": c}),
        )))
    }

    fn pg_dsn(&self, s: &Stored) -> Result<Option<Item>, NotLive> {
        let Some(dsn) = self.source_at(s, "dsn")? else {
            return Ok(None);
        };
        let mut p = Map::new();
        p.insert("id".into(), json!(s.id));
        p.insert("foreign_id".into(), json!(s.foreign_id));
        p.insert("dsn".into(), dsn);
        copy(s, &mut p, &["database", "role"]);
        Ok(Some(Item::Postgres(Value::Object(p))))
    }
}

fn nonnull<'a>(s: &'a Stored, key: &str) -> Option<&'a Value> {
    s.body.get(key).filter(|v| !v.is_null())
}

/// Copies the attributes that are set and not blank.
fn copy(s: &Stored, out: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        match nonnull(s, k) {
            Some(Value::String(v)) if v.is_empty() => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(v) => {
                out.insert((*k).to_owned(), v.clone());
            }
            None => {}
        }
    }
}

fn rules_of(s: &Stored) -> Value {
    rules::deliver(s.body.get("rules").unwrap_or(&Value::Null))
}
