//! Broker credentials: an OAuth refresh-token lifecycle iron-control runs itself. The
//! refresh_token seed, client_secret and header values are write-only (sealed); the refresh
//! state lives in `broker_state` (see crate::broker).

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::input::{LONG, SECRET, SHORT};

pub const ATTRS: &[&str] = &[
    "token_endpoint",
    "scopes",
    "client_id",
    "client_secret",
    "token_endpoint_headers",
    "refresh_token",
    "early_refresh_slack_seconds",
    "early_refresh_fraction",
    "max_refresh_interval_seconds",
    "refresh_timeout_seconds",
];

pub const READ_ONLY: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "status",
    "token_endpoint_header_names",
    "expires_at",
    "last_refresh",
    "next_attempt_at",
    "dead",
    "dead_reason",
    "failure_count",
];

pub const DEFAULT_SLACK: i64 = 300;
pub const DEFAULT_FRACTION: f64 = 0.2;
pub const DEFAULT_MAX_INTERVAL: i64 = 86_400;
pub const DEFAULT_TIMEOUT: i64 = 30;

pub fn prepare(c: &mut Ctx<'_>) {
    super::oauth::url_attr(c, "token_endpoint");
    c.strings_attr("scopes", LONG);
    c.attr("client_id", |c| {
        c.input
            .req_string("client_id", LONG, &mut c.errs)
            .map(Value::String)
    });
    c.require("client_id");
    if c.supplied("client_secret") {
        if let Some(s) = c.input.string("client_secret", SECRET, &mut c.errs) {
            c.out.sealed.insert("client_secret".into(), json!(s));
        }
    } else {
        c.keep("client_secret");
    }
    headers(c);
    if c.supplied("refresh_token") {
        match c.input.string("refresh_token", SECRET, &mut c.errs) {
            Some(t) if !t.is_empty() => c.out.refresh_token = Some(t),
            _ => c.errs.add("refresh_token", "can't be blank"),
        }
    }
    int_attr(
        c,
        "early_refresh_slack_seconds",
        0,
        31_536_000,
        DEFAULT_SLACK,
    );
    int_attr(
        c,
        "max_refresh_interval_seconds",
        1,
        31_536_000,
        DEFAULT_MAX_INTERVAL,
    );
    int_attr(c, "refresh_timeout_seconds", 1, 300, DEFAULT_TIMEOUT);
    c.attr("early_refresh_fraction", |c| {
        let f = c.input.number("early_refresh_fraction", &mut c.errs)?;
        if (0.0..1.0).contains(&f) {
            Some(json!(f))
        } else {
            c.errs.add("early_refresh_fraction", "must be in [0, 1)");
            None
        }
    });
    if c.effective("early_refresh_fraction").is_none() {
        c.out
            .body
            .insert("early_refresh_fraction".into(), json!(DEFAULT_FRACTION));
    }
    c.out.body.entry("scopes").or_insert(json!([]));
}

fn int_attr(c: &mut Ctx<'_>, key: &str, min: i64, max: i64, default: i64) {
    c.attr(key, |c| {
        c.input.int(key, min, max, &mut c.errs).map(|n| json!(n))
    });
    if c.effective(key).is_none() {
        c.out.body.insert(key.into(), json!(default));
    }
}

/// `token_endpoint_headers`: name -> value, values sealed, names public.
fn headers(c: &mut Ctx<'_>) {
    const NAMES: &str = "token_endpoint_header_names";
    if !c.supplied("token_endpoint_headers") {
        c.keep("token_endpoint_headers");
        c.keep(NAMES);
        c.out.body.entry(NAMES).or_insert(json!([]));
        return;
    }
    let mut names = Vec::new();
    if let Some(m) = c.input.object("token_endpoint_headers", &mut c.errs) {
        for (name, v) in m {
            let at = format!("token_endpoint_headers.{name}");
            if name.is_empty() || name.len() > SHORT {
                c.errs.add(&at, "header name is blank or too long");
                continue;
            }
            match v {
                Value::String(s) if s.len() <= SECRET => {
                    c.out.sealed.insert(at.clone(), json!(s));
                    names.push(name.clone());
                }
                _ => c.errs.add(&at, "must be a string"),
            }
        }
    }
    c.out.body.insert(NAMES.into(), json!(names));
}

/// Refresh parameters of a stored broker credential.
#[derive(Debug, Clone)]
pub struct Params {
    pub token_endpoint: String,
    pub scopes: Vec<String>,
    pub client_id: String,
    pub slack_s: i64,
    pub fraction: f64,
    pub max_interval_s: i64,
    pub timeout_s: i64,
}

impl Params {
    pub fn from_body(b: &Map<String, Value>) -> Self {
        let int = |k: &str, d: i64| b.get(k).and_then(Value::as_i64).unwrap_or(d);
        Self {
            token_endpoint: b
                .get("token_endpoint")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            scopes: b
                .get("scopes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            client_id: b
                .get("client_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            slack_s: int("early_refresh_slack_seconds", DEFAULT_SLACK),
            fraction: b
                .get("early_refresh_fraction")
                .and_then(Value::as_f64)
                .unwrap_or(DEFAULT_FRACTION),
            max_interval_s: int("max_refresh_interval_seconds", DEFAULT_MAX_INTERVAL),
            timeout_s: int("refresh_timeout_seconds", DEFAULT_TIMEOUT),
        }
    }
}
