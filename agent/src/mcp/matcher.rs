//! `when` clauses: a dot path into `params.arguments` and one of `equals`, `in`, `matches`.

use regex::Regex;
use serde_json::Value;

use crate::config::mcp::McpMatcher;

enum Cond {
    Equals(Value),
    In(Vec<Value>),
    Matches(Regex),
}

/// One compiled clause.
pub struct Matcher {
    path: Vec<String>,
    cond: Cond,
}

impl Matcher {
    /// Compiles a validated clause; `Err` carries the regex error (already checked at load).
    pub fn compile(m: &McpMatcher) -> Result<Self, regex::Error> {
        let cond = match (&m.equals, &m.in_, &m.matches) {
            (Some(v), _, _) => Cond::Equals(v.clone()),
            (None, Some(vs), _) => Cond::In(vs.clone()),
            (None, None, Some(re)) => Cond::Matches(Regex::new(re)?),
            // Refused by validation; a clause that can never hold keeps default-deny.
            (None, None, None) => Cond::In(Vec::new()),
        };
        Ok(Self {
            path: m.path.split('.').map(str::to_string).collect(),
            cond,
        })
    }

    /// Whether the clause holds for these `arguments`. A missing path or a value of the
    /// wrong type fails the clause.
    pub fn holds(&self, arguments: Option<&Value>) -> bool {
        let Some(v) = arguments.and_then(|a| lookup(a, &self.path)) else {
            return false;
        };
        match &self.cond {
            Cond::Equals(want) => json_eq(v, want),
            Cond::In(options) => options.iter().any(|o| json_eq(v, o)),
            Cond::Matches(re) => stringified(v).is_some_and(|s| re.is_match(&s)),
        }
    }
}

/// Follows a dot path: object keys, and numeric segments as array indexes.
fn lookup<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// JSON equality with numbers compared by value (YAML `5` equals JSON `5.0`); `"5"` ≠ `5`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

/// Scalars as text for `matches` (the docs' "stringified value"); objects, arrays and null
/// do not match.
fn stringified(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(path: &str, equals: Option<Value>, in_: Option<Vec<Value>>, re: Option<&str>) -> Matcher {
        Matcher::compile(&McpMatcher {
            path: path.into(),
            equals,
            in_,
            matches: re.map(str::to_string),
        })
        .unwrap()
    }

    #[test]
    fn equals_in_matches_on_dot_paths() {
        let args = json!({"owner": "ironsh", "n": 5, "labels": ["bug", "p1"], "o": {"k": true}});
        assert!(m("owner", Some(json!("ironsh")), None, None).holds(Some(&args)));
        assert!(!m("owner", Some(json!("other")), None, None).holds(Some(&args)));
        assert!(m("n", Some(json!(5.0)), None, None).holds(Some(&args)));
        assert!(!m("n", Some(json!("5")), None, None).holds(Some(&args)));
        assert!(m("labels.1", None, Some(vec![json!("p0"), json!("p1")]), None).holds(Some(&args)));
        assert!(!m("labels.7", None, Some(vec![json!("p1")]), None).holds(Some(&args)));
        assert!(m("o.k", Some(json!(true)), None, None).holds(Some(&args)));
        // Unanchored, on the stringified scalar.
        assert!(m("owner", None, None, Some("ron")).holds(Some(&args)));
        assert!(m("n", None, None, Some("^5$")).holds(Some(&args)));
        assert!(!m("o", None, None, Some(".*")).holds(Some(&args)));
        assert!(!m("missing", None, None, Some(".*")).holds(Some(&args)));
        assert!(!m("owner", Some(json!("ironsh")), None, None).holds(None));
    }
}
