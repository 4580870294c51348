//! Static secrets: one source, request rules, and exactly one of inject_config / replace_config.

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::input::{LONG, Obj, SHORT};

pub const ATTRS: &[&str] = &["inject_config", "replace_config", "source", "rules"];

pub fn prepare(c: &mut Ctx<'_>) {
    c.attr("inject_config", |c| {
        let o = c.input.object("inject_config", &mut c.errs)?;
        let at = c.input.field("inject_config");
        inject_config(Obj::new(o, &at), c)
    });
    c.attr("replace_config", |c| {
        let o = c.input.object("replace_config", &mut c.errs)?;
        let at = c.input.field("replace_config");
        replace_config(Obj::new(o, &at), c)
    });
    c.source_attr("source");
    c.rules_attr();
    match (c.effective("inject_config"), c.effective("replace_config")) {
        (None, None) => c
            .errs
            .add("base", "must define one of inject_config or replace_config"),
        (Some(_), Some(_)) => c.errs.add(
            "base",
            "must define only one of inject_config or replace_config",
        ),
        _ => {}
    }
}

/// `{header | query_param, formatter?}`; shared with the secret policies API.
pub fn inject_config(o: Obj<'_>, c: &mut Ctx<'_>) -> Option<Value> {
    inject_config_errs(o, &mut c.errs)
}

pub fn inject_config_errs(o: Obj<'_>, errs: &mut crate::input::Errors) -> Option<Value> {
    let before = errs.0.len();
    o.check_keys(&["header", "query_param", "formatter"], errs);
    let header = o.string("header", SHORT, errs);
    let query = o.string("query_param", SHORT, errs);
    let formatter = o.string("formatter", LONG, errs);
    match (&header, &query) {
        (Some(_), Some(_)) | (None, None) => {
            errs.add(o.at, "exactly one of header or query_param is required")
        }
        _ => {}
    }
    for (k, v) in [("header", &header), ("query_param", &query)] {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            errs.add(&o.field(k), "can't be blank");
        }
    }
    if errs.0.len() > before {
        return None;
    }
    let mut m = Map::new();
    if let Some(h) = header {
        m.insert("header".into(), json!(h));
    }
    if let Some(q) = query {
        m.insert("query_param".into(), json!(q));
    }
    if let Some(f) = formatter {
        m.insert("formatter".into(), json!(f));
    }
    Some(Value::Object(m))
}

fn replace_config(o: Obj<'_>, c: &mut Ctx<'_>) -> Option<Value> {
    let errs = &mut c.errs;
    let before = errs.0.len();
    o.check_keys(
        &[
            "proxy_value",
            "match_headers",
            "match_body",
            "match_path",
            "match_query",
            "require",
        ],
        errs,
    );
    let pv = o.req_string("proxy_value", SHORT, errs);
    let mut m = Map::new();
    m.insert("proxy_value".into(), json!(pv));
    if let Some(h) = o.strings("match_headers", SHORT, errs) {
        m.insert("match_headers".into(), json!(h));
    }
    for k in ["match_body", "match_path", "match_query", "require"] {
        if let Some(b) = o.bool(k, errs) {
            m.insert(k.into(), json!(b));
        }
    }
    (errs.0.len() == before).then_some(Value::Object(m))
}
