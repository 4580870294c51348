//! HMAC secrets: signing parameters, templated headers, named credential sources.

use serde_json::{Value, json};

use super::Ctx;
use crate::input::{LONG, Obj, SHORT};

pub const ATTRS: &[&str] = &[
    "timestamp_format",
    "signature_algorithm",
    "signature_key_encoding",
    "signature_output_encoding",
    "signature_message",
    "allow_chunked_body",
    "headers",
    "credentials",
    "rules",
];

pub fn prepare(c: &mut Ctx<'_>) {
    let enums: [(&str, &[&str]); 4] = [
        (
            "timestamp_format",
            &["unix_seconds", "unix_millis", "unix_nanos", "rfc3339"],
        ),
        ("signature_algorithm", &["sha256", "sha512", "sha1"]),
        ("signature_key_encoding", &["raw", "base64", "hex"]),
        ("signature_output_encoding", &["base64", "hex"]),
    ];
    for (k, values) in enums {
        c.one_of(k, values);
        c.require(k);
    }
    c.attr("signature_message", |c| {
        c.input
            .req_string("signature_message", LONG, &mut c.errs)
            .map(Value::String)
    });
    c.require("signature_message");
    c.bool_attr("allow_chunked_body", false);
    c.attr("headers", |c| headers(c));
    c.require_nonempty("headers", "must contain at least one header");
    let names = c.source_map("credentials", SHORT);
    if !names.is_some_and(|n| n.iter().any(|n| n == "secret")) {
        c.errs
            .add("credentials.secret", "is required (the HMAC key)");
    }
    c.rules_attr();
    c.require_nonempty("rules", "must contain at least one rule");
}

fn headers(c: &mut Ctx<'_>) -> Option<Value> {
    let arr = c.input.array("headers", &mut c.errs)?;
    let before = c.errs.0.len();
    let mut out = Vec::new();
    for (i, h) in arr.iter().enumerate() {
        let at = format!("headers[{i}]");
        let Some(m) = h.as_object() else {
            c.errs.add(&at, "must be an object with name and value");
            continue;
        };
        let o = Obj::new(m, &at);
        o.check_keys(&["name", "value"], &mut c.errs);
        let name = o.req_string("name", SHORT, &mut c.errs);
        let value = o.req_string("value", LONG, &mut c.errs);
        out.push(json!({"name": name, "value": value}));
    }
    (c.errs.0.len() == before).then_some(Value::Array(out))
}
