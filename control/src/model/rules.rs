//! Request rules: `{host | cidr, http_methods, paths}` in the REST API, `{host, methods, paths}`
//! in what a proxy receives.

use serde_json::{Map, Value, json};

use crate::input::{Errors, Obj, SHORT};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "*",
];

/// Validates `rules` (an array of rule objects) into the stored REST shape (with `position`).
pub fn validate(o: Obj<'_>, errs: &mut Errors) -> Option<Vec<Value>> {
    let arr = o.array("rules", errs)?;
    let before = errs.0.len();
    let mut out = Vec::with_capacity(arr.len());
    for (i, r) in arr.iter().enumerate() {
        let at = format!("{}[{i}]", o.field("rules"));
        let Some(m) = r.as_object() else {
            errs.add(&at, "must be an object");
            continue;
        };
        let ro = Obj::new(m, &at);
        ro.check_keys(&["host", "cidr", "http_methods", "paths", "position"], errs);
        let host = ro.string("host", SHORT, errs);
        let cidr = ro.string("cidr", 64, errs);
        match (&host, &cidr) {
            (Some(_), Some(_)) | (None, None) => {
                errs.add(&at, "exactly one of host or cidr is required")
            }
            _ => {}
        }
        if let Some(h) = &host
            && h.trim().is_empty()
        {
            errs.add(&ro.field("host"), "can't be blank");
        }
        if let Some(c) = &cidr
            && !valid_cidr(c)
        {
            errs.add(&ro.field("cidr"), "must be a valid CIDR (e.g. 10.0.0.0/8)");
        }
        let methods = ro.strings("http_methods", 16, errs).unwrap_or_default();
        for (j, m) in methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                errs.add(
                    &format!("{}[{j}]", ro.field("http_methods")),
                    format!("must be one of {}", METHODS.join(", ")),
                );
            }
        }
        let paths = ro.strings("paths", 1024, errs).unwrap_or_default();
        for (j, p) in paths.iter().enumerate() {
            if !p.starts_with('/') {
                errs.add(&format!("{}[{j}]", ro.field("paths")), "must start with /");
            }
        }
        out.push(json!({
            "host": host, "cidr": cidr, "position": i,
            "http_methods": methods, "paths": paths,
        }));
    }
    (errs.0.len() == before).then_some(out)
}

pub fn valid_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

/// Stored REST rules -> delivered rules: `methods` for `http_methods`, blank fields omitted.
pub fn deliver(stored: &Value) -> Value {
    let rules = stored.as_array().map(Vec::as_slice).unwrap_or(&[]);
    Value::Array(rules.iter().map(deliver_one).collect())
}

fn deliver_one(r: &Value) -> Value {
    let mut out = Map::new();
    for (from, to) in [
        ("host", "host"),
        ("cidr", "cidr"),
        ("http_methods", "methods"),
        ("paths", "paths"),
        ("methods", "methods"),
    ] {
        match r.get(from) {
            Some(Value::Null) | None => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(v) => {
                out.insert(to.into(), v.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_validate_and_deliver() {
        let body = json!({"rules":[{"host":"api.github.com","http_methods":["GET"],"paths":["/repos/*"]}]});
        let mut errs = Errors::default();
        let r = validate(Obj::new(body.as_object().unwrap(), ""), &mut errs).unwrap();
        assert!(errs.is_empty());
        assert_eq!(r[0]["position"], 0);
        assert_eq!(
            deliver(&Value::Array(r)),
            json!([{"host":"api.github.com","methods":["GET"],"paths":["/repos/*"]}])
        );
        let bad = json!({"rules":[{"cidr":"10.0.0.0/33","http_methods":["FETCH"],"paths":["x"]}]});
        let mut errs = Errors::default();
        assert!(validate(Obj::new(bad.as_object().unwrap(), ""), &mut errs).is_none());
        assert!(errs.0.contains_key("rules[0].cidr"));
        assert!(errs.0.contains_key("rules[0].http_methods[0]"));
        assert!(errs.0.contains_key("rules[0].paths[0]"));
    }
}
