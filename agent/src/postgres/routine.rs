//! Function and procedure bodies (`CREATE [OR REPLACE] FUNCTION|PROCEDURE`). A body runs later
//! with the session's role, so it gets the statement policy when it is created; otherwise
//! `CREATE FUNCTION pg_temp.f() ... AS $$SELECT set_config('role', ...)$$` (only the TEMP
//! privilege, which PUBLIC has) followed by `SELECT pg_temp.f()` would change the role.
//!
//! - `LANGUAGE sql`: the `AS` text is parsed and checked like a client's statement. A
//!   SQL-standard body (`RETURN ...`, `BEGIN ATOMIC ... END`) is already in the statement's tree.
//! - `LANGUAGE plpgsql`: libpg_query compiles the function as PostgreSQL would, and every SQL
//!   statement and expression in it is checked in the parse mode PL/pgSQL itself uses for it.
//!   `EXECUTE` in any form is refused: its text exists only at run time.
//! - Any other language (`plperl`, `plpython3u`, `c`, ...): the body cannot be read; refused.
//!
//! A body that does not parse is refused, unlike a client's statement: with
//! `check_function_bodies = off` the server stores a body without parsing it.

use pg_query::ParserOptions;
use serde_json::Value;

use super::sql::{self, Refusal, Scope};

/// Bodies can create functions in turn; nesting deeper than this is refused.
const MAX_DEPTH: u8 = 4;

/// What a `CreateFunctionStmt` needs.
pub(super) enum Body {
    /// The verdict, known from the statement alone.
    Checked(Option<Refusal>),
    /// A PL/pgSQL body: [`plpgsql`] compiles it from the statement's text.
    Plpgsql,
}

/// Checks one `CreateFunctionStmt` node found at `scope`.
pub(super) fn create_function(stmt: &Value, scope: Scope<'_>) -> Body {
    let mut language = None;
    let mut bodies = Vec::new();
    for opt in stmt["options"].as_array().into_iter().flatten() {
        let def = &opt["node"]["DefElem"];
        match def["defname"].as_str() {
            // An unreadable name is refused below, as an unknown language.
            Some("language") => language = Some(def["arg"]["node"]["String"]["sval"].as_str()),
            Some("as") => strings(&def["arg"], &mut bodies),
            _ => {}
        }
    }
    match language {
        // Without LANGUAGE the server accepts only a SQL-standard body; an `AS` text is checked
        // as SQL anyway (the server refuses it).
        None | Some(Some("sql")) => Body::Checked(sql_bodies(&bodies, scope)),
        Some(Some("plpgsql")) if returns_trigger(stmt) => {
            Body::Checked(trigger_bodies(&bodies, scope))
        }
        Some(Some("plpgsql")) => Body::Plpgsql,
        Some(_) => Body::Checked(Some(Refusal::FunctionLanguage)),
    }
}

/// Every string in an `AS` clause (one for SQL; C functions have two).
fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::Object(map) => {
            if let Some(s) = map.get("sval").and_then(Value::as_str) {
                out.push(s);
            }
            map.values().for_each(|c| strings(c, out));
        }
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        _ => {}
    }
}

/// `RETURNS trigger` or `RETURNS event_trigger` (schema-qualified or not).
fn returns_trigger(stmt: &Value) -> bool {
    let last = stmt["return_type"]["names"]
        .as_array()
        .and_then(|n| n.last())
        .and_then(|n| n["node"]["String"]["sval"].as_str());
    matches!(last, Some("trigger" | "event_trigger"))
}

/// The variables PL/pgSQL gives a trigger function.
const TRIGGER_VARIABLES: &str = "new record; old record; tg_name name; tg_when text; \
    tg_level text; tg_op text; tg_relid oid; tg_relname name; tg_table_name name; \
    tg_table_schema name; tg_nargs integer; tg_argv text[]; tg_event text; tg_tag text;";

/// libpg_query compiles trigger functions but cannot render them (it has no output for the
/// `TG_` variables), so a trigger body is compiled as the one block of an ordinary function that
/// declares the same variables: the same statements and expressions, checked the same way. The
/// body's block is a statement of the wrapping block, which needs a `;` after it unless the
/// body ends with one; a body that compiles neither way is refused.
fn trigger_bodies(bodies: &[&str], scope: Scope<'_>) -> Option<Refusal> {
    bodies.iter().find_map(|body| {
        let mut tag = "$iron_agent_body$".to_string();
        let mut n = 0;
        while body.contains(&tag) {
            n += 1;
            tag = format!("$iron_agent_body{n}$");
        }
        let wrapped = |end: &str| {
            format!(
                "CREATE FUNCTION pg_temp.iron_agent_check() RETURNS record LANGUAGE plpgsql AS \
                 {tag}DECLARE {TRIGGER_VARIABLES} BEGIN {body}\n{end}{tag}"
            )
        };
        ["; END", "END"]
            .into_iter()
            .map(|end| plpgsql(&wrapped(end), scope, 1))
            .find(|v| *v != Some(Refusal::FunctionBody))
            .unwrap_or(Some(Refusal::FunctionBody))
    })
}

fn deeper(scope: Scope<'_>) -> Option<Scope<'_>> {
    (scope.depth < MAX_DEPTH).then_some(Scope {
        depth: scope.depth + 1,
        ..scope
    })
}

fn sql_bodies(bodies: &[&str], scope: Scope<'_>) -> Option<Refusal> {
    if bodies.is_empty() {
        return None;
    }
    let Some(inner) = deeper(scope) else {
        return Some(Refusal::FunctionBody);
    };
    bodies.iter().find_map(|b| {
        sql::verdict(b, ParserOptions::DEFAULT, inner).unwrap_or(Some(Refusal::FunctionBody))
    })
}

/// Compiles every PL/pgSQL function and procedure `sql` creates and checks what they run.
/// `created`: how many functions (any language) the statement's tree holds; libpg_query
/// compiles one entry for each, so fewer means one was missed.
pub(super) fn plpgsql(sql: &str, scope: Scope<'_>, created: usize) -> Option<Refusal> {
    let Some(inner) = deeper(scope) else {
        return Some(Refusal::FunctionBody);
    };
    match pg_query::parse_plpgsql(sql) {
        Ok(functions) if functions.as_array().is_some_and(|f| f.len() >= created) => {
            plpgsql_tree(&functions, inner)
        }
        _ => Some(Refusal::FunctionBody),
    }
}

fn plpgsql_tree(v: &Value, scope: Scope<'_>) -> Option<Refusal> {
    match v {
        Value::Object(map) => map.iter().find_map(|(k, child)| match k.as_str() {
            // EXECUTE, FOR ... IN EXECUTE, OPEN ... FOR EXECUTE, RETURN QUERY EXECUTE.
            "PLpgSQL_stmt_dynexecute" | "PLpgSQL_stmt_dynfors" | "dynquery" => {
                Some(Refusal::DynamicSql)
            }
            "PLpgSQL_expr" => expression(child, scope),
            _ => plpgsql_tree(child, scope),
        }),
        Value::Array(items) => items.iter().find_map(|i| plpgsql_tree(i, scope)),
        _ => None,
    }
}

/// One embedded statement or expression, parsed in its recorded mode (PostgreSQL's
/// `RawParseMode`, which pg_query numbers the same way).
fn expression(e: &Value, scope: Scope<'_>) -> Option<Refusal> {
    let query = e["query"].as_str()?;
    let mode = match e["parseMode"].as_i64() {
        Some(0) | None => ParserOptions::DEFAULT,
        Some(2) => ParserOptions::PLPGSQL_EXPR,
        Some(3) => ParserOptions::PLPGSQL_ASSIGN1,
        Some(4) => ParserOptions::PLPGSQL_ASSIGN2,
        Some(5) => ParserOptions::PLPGSQL_ASSIGN3,
        Some(_) => return Some(Refusal::FunctionBody),
    };
    sql::verdict(query, mode, scope).unwrap_or(Some(Refusal::FunctionBody))
}
