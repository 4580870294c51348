//! Secret policies: a credential applied at the egress boundary on tag-matched proxies,
//! merged into the delivered `secrets`.

use serde_json::{Map, Value, json};

use crate::input::{Errors, LONG, Obj, SHORT};

/// (type, required key, optional keys)
const SOURCES: &[(&str, &str, &[&str])] = &[
    ("env", "var", &[]),
    ("aws_sm", "secret_id", &["region"]),
    ("aws_ssm", "name", &["region", "with_decryption"]),
];

pub fn validate(o: Obj<'_>, errs: &mut Errors) -> Map<String, Value> {
    let mut m = Map::new();
    let mode = o.req_string("mode", SHORT, errs);
    if let Some(md) = &mode
        && md != "inject"
        && md != "replace"
    {
        errs.add("mode", "must be inject or replace");
    }
    m.insert("mode".into(), json!(mode));
    m.insert("rules".into(), Value::Array(super::validate_rules(o, errs)));
    match o.object("source", errs) {
        Some(s) => {
            m.insert("source".into(), source(Obj::new(s, "source"), errs));
        }
        None if o.present("source").is_none() => errs.add("source", "can't be blank"),
        None => {}
    }
    // Both configs may be sent; the one that does not match `mode` is cleared.
    match mode.as_deref() {
        Some("inject") => match o.object("inject_config", errs) {
            Some(c) => {
                let c = crate::model::static_secret::inject_config_errs(
                    Obj::new(c, "inject_config"),
                    errs,
                );
                m.insert("inject_config".into(), json!(c));
            }
            None => errs.add("inject_config", "is required when mode is inject"),
        },
        Some("replace") => match o.object("replace_config", errs) {
            Some(c) => {
                let c = replace_config(Obj::new(c, "replace_config"), errs);
                m.insert("replace_config".into(), json!(c));
            }
            None => errs.add("replace_config", "is required when mode is replace"),
        },
        _ => {}
    }
    m
}

fn source(o: Obj<'_>, errs: &mut Errors) -> Value {
    let ty = o
        .string("type", SHORT, errs)
        .unwrap_or_else(|| "env".into());
    let Some((_, required, optional)) = SOURCES.iter().find(|(t, _, _)| *t == ty) else {
        errs.add("source.type", "must be one of env, aws_sm, aws_ssm");
        return Value::Null;
    };
    let mut allowed = vec!["type", "json_key", "ttl", *required];
    allowed.extend_from_slice(optional);
    o.check_keys(&allowed, errs);
    o.req_string(required, LONG, errs);
    for k in ["json_key", "region"] {
        o.string(k, SHORT, errs);
    }
    o.bool("with_decryption", errs);
    if let Some(ttl) = o.string("ttl", 32, errs) {
        let ok = ttl.len() > 1
            && ttl[..ttl.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && ttl.ends_with(['h', 'm', 's']);
        if !ok {
            errs.add(
                "source.ttl",
                "must be digits followed by h, m or s (e.g. 15m)",
            );
        }
    }
    let mut out = o.map.clone();
    out.insert("type".into(), json!(ty));
    Value::Object(out)
}

/// `proxy_value`: alphanumerics, `-._~` or `%XX` escapes.
fn url_safe_token(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => i += 1,
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                i += 3
            }
            _ => return false,
        }
    }
    !b.is_empty()
}

fn replace_config(o: Obj<'_>, errs: &mut Errors) -> Value {
    o.check_keys(&["proxy_value"], errs);
    let pv = o.req_string("proxy_value", SHORT, errs);
    if let Some(p) = &pv
        && !url_safe_token(p)
    {
        errs.add(
            "replace_config.proxy_value",
            "must be alphanumeric, -._~ or %XX escapes",
        );
    }
    json!({ "proxy_value": pv })
}

/// The `secrets` entry a matching proxy receives. Replace mode swaps the placeholder in the
/// URL path, as the docs describe.
pub fn deliver(body: &Value) -> Value {
    let mut e = Map::new();
    e.insert(
        "source".into(),
        body.get("source").cloned().unwrap_or(Value::Null),
    );
    match body.get("mode").and_then(Value::as_str) {
        Some("replace") => {
            let pv = body
                .get("replace_config")
                .and_then(|c| c.get("proxy_value"))
                .cloned()
                .unwrap_or(Value::Null);
            e.insert(
                "replace".into(),
                json!({"proxy_value": pv, "match_headers": [], "match_path": true}),
            );
        }
        _ => {
            e.insert(
                "inject".into(),
                body.get("inject_config").cloned().unwrap_or(Value::Null),
            );
        }
    }
    e.insert(
        "rules".into(),
        Value::Array(super::deliver_rules(body.get("rules"))),
    );
    Value::Object(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_value_charset() {
        assert!(url_safe_token("PROXY-BOT-TOKEN"));
        assert!(url_safe_token("a%2Fb"));
        assert!(!url_safe_token("a/b"));
        assert!(!url_safe_token("a%2"));
        assert!(!url_safe_token(""));
    }
}
