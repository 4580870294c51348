//! OAuth token secrets: a grant, its credential sources, optional token-endpoint headers.

use serde_json::Value;

use super::Ctx;
use crate::input::{LONG, SHORT};

pub const ATTRS: &[&str] = &[
    "grant",
    "token_endpoint",
    "audience",
    "scopes",
    "header",
    "value_prefix",
    "credentials",
    "token_endpoint_headers",
    "rules",
];

const GRANTS: &[&str] = &[
    "refresh_token",
    "client_credentials",
    "password",
    "jwt_bearer",
];

/// (grant, required credential fields, optional credential fields)
fn fields(grant: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match grant {
        "refresh_token" => (&["refresh_token", "client_id"], &["client_secret"]),
        "client_credentials" => (&["client_id", "client_secret"], &[]),
        "password" => (&["username", "password", "client_id"], &["client_secret"]),
        "jwt_bearer" => (&["issuer", "subject", "private_key"], &["private_key_id"]),
        _ => (&[], &[]),
    }
}

pub fn valid_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() > "http://".len() + 1
        && !s.contains(char::is_whitespace)
}

pub fn url_attr(c: &mut Ctx<'_>, key: &str) {
    c.attr(key, |c| {
        let s = c.input.string(key, LONG, &mut c.errs)?;
        if valid_url(&s) {
            Some(Value::String(s))
        } else {
            let f = c.input.field(key);
            c.errs.add(&f, "must be an http:// or https:// URL");
            None
        }
    });
    c.require(key);
}

pub fn prepare(c: &mut Ctx<'_>) {
    c.one_of("grant", GRANTS);
    c.require("grant");
    url_attr(c, "token_endpoint");
    c.string_attr("audience", LONG);
    c.strings_attr("scopes", LONG);
    c.string_attr("header", SHORT);
    c.string_attr("value_prefix", SHORT);
    let names = c.source_map("credentials", SHORT);
    let _ = c.source_map("token_endpoint_headers", SHORT);
    c.rules_attr();
    c.require_nonempty("rules", "must contain at least one rule");
    let grant = c
        .effective("grant")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(grant) = grant else { return };
    if grant == "jwt_bearer" && c.effective("audience").is_none() {
        c.errs
            .add("audience", "is required when grant is jwt_bearer");
    }
    match names {
        None => c.errs.add("credentials", "can't be blank"),
        Some(names) => {
            let (required, optional) = fields(&grant);
            for r in required {
                if !names.iter().any(|n| n == r) {
                    c.errs.add(
                        &format!("credentials.{r}"),
                        format!("is required for the {grant} grant"),
                    );
                }
            }
            for n in &names {
                if !required.contains(&n.as_str()) && !optional.contains(&n.as_str()) {
                    c.errs.add(
                        &format!("credentials.{n}"),
                        format!("is not used by the {grant} grant"),
                    );
                }
            }
        }
    }
    for k in [
        "audience",
        "scopes",
        "header",
        "value_prefix",
        "token_endpoint_headers",
    ] {
        c.out.body.entry(k).or_insert(Value::Null);
    }
    if c.out
        .body
        .get("token_endpoint_headers")
        .is_some_and(Value::is_null)
    {
        c.out
            .body
            .insert("token_endpoint_headers".into(), serde_json::json!({}));
    }
}
