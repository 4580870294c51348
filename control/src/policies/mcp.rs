//! MCP policies: per-tool allowlists delivered as the proxy's `mcp.servers`.

use serde_json::{Map, Value, json};

use crate::input::{Errors, LONG, Obj, SHORT};

pub fn validate(o: Obj<'_>, errs: &mut Errors) -> Map<String, Value> {
    let rules = super::validate_rules(o, errs);
    let mut tools = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, t) in o.array("tools", errs).into_iter().flatten().enumerate() {
        let at = format!("tools[{i}]");
        let Some(m) = t.as_object() else {
            errs.add(&at, "must be an object");
            continue;
        };
        let to = Obj::new(m, &at);
        to.check_keys(&["name", "matchers"], errs);
        let name = to.req_string("name", SHORT, errs);
        if let Some(n) = &name
            && !names.insert(n.clone())
        {
            errs.add(&to.field("name"), "is duplicated");
        }
        let mut matchers = Vec::new();
        for (j, mt) in to.array("matchers", errs).into_iter().flatten().enumerate() {
            let mat = format!("{at}.matchers[{j}]");
            let Some(mm) = mt.as_object() else {
                errs.add(&mat, "must be an object");
                continue;
            };
            matchers.push(matcher(Obj::new(mm, &mat), errs));
        }
        tools.push(json!({"name": name, "matchers": matchers}));
    }
    let mut m = Map::new();
    m.insert("rules".into(), Value::Array(rules));
    m.insert("tools".into(), Value::Array(tools));
    m
}

fn matcher(o: Obj<'_>, errs: &mut Errors) -> Value {
    o.check_keys(&["path", "equals", "in", "matches"], errs);
    o.req_string("path", SHORT, errs);
    let set: Vec<&str> = ["equals", "in", "matches"]
        .into_iter()
        .filter(|k| o.present(k).is_some())
        .collect();
    if set.len() != 1 {
        errs.add(o.at, "set exactly one of equals, in, matches");
    }
    if let Some(v) = o.present("equals")
        && (v.is_object() || v.is_array())
    {
        errs.add(&o.field("equals"), "must be a scalar");
    }
    o.array("in", errs);
    if let Some(re) = o.string("matches", LONG, errs)
        && let Err(e) = regex_syntax::Parser::new().parse(&re)
    {
        errs.add(
            &o.field("matches"),
            format!("is not a valid regular expression: {e}"),
        );
    }
    Value::Object(o.map.clone())
}

/// `{name, rules, tools: [{name, when?}]}`; None for a policy without rules (it could match
/// no request, and a server without rules is refused by the proxy).
pub fn deliver(name: &str, body: &Value) -> Option<Value> {
    let rules = super::deliver_rules(body.get("rules"));
    if rules.is_empty() {
        return None;
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut o = Map::new();
                    o.insert("name".into(), t.get("name").cloned().unwrap_or(Value::Null));
                    if let Some(m) = t.get("matchers").and_then(Value::as_array)
                        && !m.is_empty()
                    {
                        o.insert("when".into(), Value::Array(m.clone()));
                    }
                    Value::Object(o)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(json!({"name": name, "rules": rules, "tools": tools}))
}
