//! GCP auth secrets: scopes plus exactly one of a keyfile source or workload identity.

use serde_json::{Value, json};

use super::Ctx;
use crate::input::{LONG, Obj, SHORT};

pub const ATTRS: &[&str] = &[
    "scopes",
    "keyfile",
    "credentials_provider",
    "subject",
    "rules",
];

pub fn prepare(c: &mut Ctx<'_>) {
    c.strings_attr("scopes", LONG);
    c.require_nonempty("scopes", "must be a non-empty array of scopes");
    c.source_attr("keyfile");
    c.attr("credentials_provider", |c| {
        let o = c.input.object("credentials_provider", &mut c.errs)?;
        let at = c.input.field("credentials_provider");
        let o = Obj::new(o, &at);
        o.check_keys(&["type"], &mut c.errs);
        match o.string("type", SHORT, &mut c.errs).as_deref() {
            Some("workload_identity") => Some(json!({"type": "workload_identity"})),
            _ => {
                c.errs.add(&o.field("type"), "must be workload_identity");
                None
            }
        }
    });
    c.string_attr("subject", SHORT);
    c.rules_attr();
    let keyfile = c.effective("keyfile").is_some();
    let provider = c.effective("credentials_provider").is_some();
    if keyfile == provider {
        c.errs.add(
            "base",
            "must define exactly one of keyfile or credentials_provider",
        );
    }
    if provider && c.effective("subject").is_some() {
        c.errs.add(
            "subject",
            "is only allowed with keyfile, not credentials_provider",
        );
    }
    for k in ["credentials_provider", "subject"] {
        c.out.body.entry(k).or_insert(Value::Null);
    }
}
