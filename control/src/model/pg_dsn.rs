//! PG DSN secrets: a DSN source delivered to proxies keyed by foreign_id.

use super::Ctx;
use crate::input::SHORT;

pub const ATTRS: &[&str] = &["database", "role", "dsn"];

pub fn prepare(c: &mut Ctx<'_>) {
    c.string_attr("database", SHORT);
    c.string_attr("role", SHORT);
    c.source_attr("dsn");
    c.require("dsn");
}
