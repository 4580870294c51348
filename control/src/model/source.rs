//! Secret sources (`{source_type, config, secret?}`): validation, the REST echo and the flat
//! shape delivered to proxies (`{type, ...config}`).

use serde_json::{Map, Value, json};

use crate::input::{Errors, LONG, Obj, SECRET, SHORT};

/// A validated source as stored: `{source_type, config}` (never the secret), the write-only
/// value of a `control_plane` source, and the broker credential a `token_broker` names.
#[derive(Debug, Clone)]
pub struct Source {
    pub stored: Value,
    pub secret: Option<String>,
    pub broker: Option<BrokerRef>,
}

/// A `token_broker` reference, resolved against the database before the write commits.
#[derive(Debug, Clone)]
pub struct BrokerRef {
    pub field: String,
    pub credential_id: String,
    pub namespace: Option<String>,
}

pub const BROKER_PREFIX: &str = "bcr_";

/// (type, required config keys, optional config keys)
const TYPES: &[(&str, &[&str], &[&str])] = &[
    ("env", &["var"], &[]),
    ("aws_sm", &["secret_id"], &["region"]),
    ("aws_ssm", &["name"], &["region", "with_decryption"]),
    ("1password", &["secret_ref"], &["token_env"]),
    (
        "1password_connect",
        &["secret_ref"],
        &["host_env", "token_env"],
    ),
    ("control_plane", &[], &[]),
    (
        "token_broker",
        &["credential_id"],
        &["credential_namespace"],
    ),
];

/// `ttl`: digits followed by h, m or s, possibly repeated (`1h30m`).
fn valid_ttl(s: &str) -> bool {
    let mut digits = false;
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits = true;
        } else if matches!(c, 'h' | 'm' | 's') && digits {
            digits = false;
            any = true;
        } else {
            return false;
        }
    }
    any && !digits
}

/// Validates the source object at `o` (already known to be an object). `previous_type` is the
/// stored type on update: `source_type` is immutable.
pub fn validate(o: Obj<'_>, previous_type: Option<&str>, errs: &mut Errors) -> Option<Source> {
    let before = errs.0.len();
    o.check_keys(&["source_type", "config", "secret"], errs);
    let ty = o.req_string("source_type", SHORT, errs)?;
    let Some((_, required, optional)) = TYPES.iter().find(|(t, _, _)| *t == ty) else {
        let names: Vec<&str> = TYPES.iter().map(|t| t.0).collect();
        errs.add(
            &o.field("source_type"),
            format!("must be one of {}", names.join(", ")),
        );
        return None;
    };
    if let Some(prev) = previous_type
        && prev != ty
    {
        errs.add(&o.field("source_type"), "can't be changed");
    }
    let empty = Map::new();
    let config = if o.has("config") {
        o.object("config", errs).unwrap_or(&empty)
    } else {
        &empty
    };
    let cf = o.field("config");
    let c = Obj::new(config, &cf);
    let mut allowed: Vec<&str> = required.iter().chain(optional.iter()).copied().collect();
    allowed.extend(["json_key", "ttl"]);
    c.check_keys(&allowed, errs);
    for k in *required {
        c.req_string(k, LONG, errs);
    }
    for k in *optional {
        if *k == "with_decryption" {
            c.bool(k, errs);
        } else {
            c.string(k, LONG, errs);
        }
    }
    c.string("json_key", SHORT, errs);
    if let Some(ttl) = c.string("ttl", 32, errs)
        && !valid_ttl(&ttl)
    {
        errs.add(
            &c.field("ttl"),
            "must be a duration like 15m or 1h (digits followed by h, m or s)",
        );
    }
    let secret = o.string("secret", SECRET, errs);
    match (ty.as_str(), &secret) {
        ("control_plane", None) => errs.add(&o.field("secret"), "can't be blank"),
        ("control_plane", Some(s)) if s.is_empty() => {
            errs.add(&o.field("secret"), "can't be blank")
        }
        ("control_plane", Some(_)) => {}
        (_, Some(_)) => errs.add(
            &o.field("secret"),
            "is only permitted for control_plane sources",
        ),
        (_, None) => {}
    }
    let broker = if ty == "token_broker" {
        broker_ref(c, errs)
    } else {
        None
    };
    if errs.0.len() > before {
        return None;
    }
    Some(Source {
        stored: json!({ "source_type": ty, "config": config }),
        secret,
        broker,
    })
}

fn broker_ref(c: Obj<'_>, errs: &mut Errors) -> Option<BrokerRef> {
    let id = c.string("credential_id", SHORT, errs)?;
    let ns = c.string("credential_namespace", SHORT, errs);
    if id.starts_with(BROKER_PREFIX) {
        if ns.is_some() {
            errs.add(
                &c.field("credential_namespace"),
                "must be omitted when credential_id is an opaque id",
            );
        }
    } else if ns.is_none() {
        errs.add(
            &c.field("credential_namespace"),
            "is required when credential_id is a foreign_id",
        );
    }
    Some(BrokerRef {
        field: c.field("credential_id"),
        credential_id: id,
        namespace: ns,
    })
}

/// The stored `source_type` of a stored source, if any.
pub fn stored_type(stored: &Value) -> Option<&str> {
    stored.get("source_type").and_then(Value::as_str)
}

/// What a delivered source resolves to: the sealed value of a `control_plane` source, the
/// current access token of a `token_broker` source.
pub enum Inline<'a> {
    None,
    Value(&'a str),
    Redacted,
}

/// The flat shape a proxy receives: `{type, ...config}`. `control_plane` and `token_broker`
/// become `{type: control_plane, value}`; keys the agent's source does not take are dropped.
pub fn flatten(stored: &Value, inline: Inline<'_>) -> Value {
    let ty = stored_type(stored).unwrap_or("env");
    let config = stored.get("config").and_then(Value::as_object);
    let mut out = Map::new();
    match ty {
        "control_plane" | "token_broker" => {
            out.insert("type".into(), json!("control_plane"));
            let v = match inline {
                Inline::Value(v) => json!(v),
                Inline::Redacted | Inline::None => json!("[redacted]"),
            };
            out.insert("value".into(), v);
            if ty == "control_plane"
                && let Some(k) = config.and_then(|c| c.get("json_key"))
            {
                out.insert("json_key".into(), k.clone());
            }
        }
        _ => {
            out.insert("type".into(), json!(ty));
            for (k, v) in config.into_iter().flatten() {
                // iron-proxy's env source has no cache; its ttl would be refused.
                if ty == "env" && k == "ttl" {
                    continue;
                }
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Source, Errors> {
        let m = v.as_object().unwrap().clone();
        let mut errs = Errors::default();
        let r = validate(Obj::new(&m, "source"), None, &mut errs);
        if errs.is_empty() {
            Ok(r.unwrap())
        } else {
            Err(errs)
        }
    }

    #[test]
    fn source_rules() {
        assert!(check(json!({"source_type":"env","config":{"var":"X","ttl":"15m"}})).is_ok());
        let e = check(json!({"source_type":"env","config":{"var":"X","bogus":1}})).unwrap_err();
        assert!(e.0.contains_key("source.config.bogus"));
        let e = check(json!({"source_type":"env","config":{}})).unwrap_err();
        assert!(e.0.contains_key("source.config.var"));
        let e = check(json!({"source_type":"env","config":{"var":"X"},"secret":"s"})).unwrap_err();
        assert!(e.0.contains_key("source.secret"));
        let e = check(json!({"source_type":"control_plane","config":{}})).unwrap_err();
        assert!(e.0.contains_key("source.secret"));
        let s = check(json!({"source_type":"control_plane","secret":"v","config":{}})).unwrap();
        assert_eq!(s.secret.as_deref(), Some("v"));
        assert!(!s.stored.to_string().contains("\"v\""));
        let e = check(json!({"source_type":"token_broker","config":{"credential_id":"gmail"}}))
            .unwrap_err();
        assert!(e.0.contains_key("source.config.credential_namespace"));
        let e =
            check(json!({"source_type":"env","config":{"var":"X","ttl":"5 minutes"}})).unwrap_err();
        assert!(e.0.contains_key("source.config.ttl"));
    }

    #[test]
    fn flatten_merges_config_and_inlines_values() {
        let s = json!({"source_type":"aws_ssm","config":{"name":"/x","with_decryption":true}});
        assert_eq!(
            flatten(&s, Inline::None),
            json!({"type":"aws_ssm","name":"/x","with_decryption":true})
        );
        let cp = json!({"source_type":"control_plane","config":{}});
        assert_eq!(
            flatten(&cp, Inline::Value("v")),
            json!({"type":"control_plane","value":"v"})
        );
    }
}
