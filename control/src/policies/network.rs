//! Network policies: egress allowlist rules, delivered to proxies as top-level `rules`.

use serde_json::{Map, Value, json};

use crate::input::{Errors, Obj};

pub fn validate(o: Obj<'_>, errs: &mut Errors) -> Map<String, Value> {
    let rules = super::validate_rules(o, errs);
    let version = o.int("version", 1, 1, errs).unwrap_or(1);
    let mut m = Map::new();
    m.insert("rules".into(), Value::Array(rules));
    m.insert("version".into(), json!(version));
    m
}

/// `{host, methods?, paths?}` per rule, empty lists omitted (empty means any).
pub fn deliver_rules(rules: Option<&Value>) -> Vec<Value> {
    crate::model::rules::deliver(rules.unwrap_or(&Value::Null))
        .as_array()
        .cloned()
        .unwrap_or_default()
}
