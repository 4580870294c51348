//! SQL classification for the relay policy (iron-proxy §21.3), with PostgreSQL's own parser
//! (libpg_query through the `pg_query` crate).
//!
//! A statement is refused when anywhere in its parse tree (CTEs, PREPARE bodies, function
//! `SET` clauses included) it changes the role, runs a `DO` block, resets everything
//! (`RESET ALL`, `DISCARD ALL`), or changes a pinned setting; a query with several statements
//! is refused if any one is. Beyond iron-proxy: `set_config` whose setting name is not a string
//! literal is refused (it could name the role at execute time), and so is anything that would
//! make the server read SQL differently from this parser: `standard_conforming_strings` other
//! than `on`, and client encodings whose multibyte characters can contain `'` or `\` bytes.
//! The bodies of functions and procedures a statement creates get the same policy (see
//! [`routine`](super::routine)): a body that runs later must not do what the statement could not.
//! Text the parser rejects is relayed: the server answers with its own syntax error.
//!
//! Parsing costs tens of microseconds, so two shortcuts keep the relay fast, both exact:
//! a lexical pre-check passes statements that cannot contain any of the constructs above
//! (see [`needs_parse`]), and an LRU cache remembers the verdict for each parsed text.

use std::collections::HashSet;
use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;
use serde_json::Value;

use super::config::ROLE_SETTINGS;
use super::routine;

/// iron-proxy caches 1024 parse results; so do we (per route).
pub const CACHE_SIZE: usize = 1024;

const PREFIX: &str = "blocked by iron-proxy policy: ";

/// Why a statement is refused. The discriminant travels in the poison statement (see `relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Role = 1,
    DoBlock = 2,
    ResetAll = 3,
    DiscardAll = 4,
    Pinned = 5,
    DynamicSetConfig = 6,
    StandardConformingStrings = 7,
    ClientEncoding = 8,
    PgSettings = 9,
    /// A fastpath `FunctionCall` message (no SQL text to check).
    FunctionCall = 10,
    /// A function or procedure body in a language other than `sql` and `plpgsql`.
    FunctionLanguage = 11,
    /// A function body that does not parse, or nests definitions too deeply.
    FunctionBody = 12,
    /// `EXECUTE` (dynamic SQL) in a plpgsql body.
    DynamicSql = 13,
}

impl Refusal {
    pub const ALL: [Refusal; 13] = [
        Self::Role,
        Self::DoBlock,
        Self::ResetAll,
        Self::DiscardAll,
        Self::Pinned,
        Self::DynamicSetConfig,
        Self::StandardConformingStrings,
        Self::ClientEncoding,
        Self::PgSettings,
        Self::FunctionCall,
        Self::FunctionLanguage,
        Self::FunctionBody,
        Self::DynamicSql,
    ];

    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == c)
    }

    pub fn sqlstate(self) -> &'static str {
        match self {
            Self::DoBlock
            | Self::ClientEncoding
            | Self::FunctionCall
            | Self::FunctionLanguage
            | Self::FunctionBody
            | Self::DynamicSql => "0A000",
            _ => "42501",
        }
    }

    /// A short name for the audit log.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Role => "role_change",
            Self::DoBlock => "do_block",
            Self::ResetAll => "reset_all",
            Self::DiscardAll => "discard_all",
            Self::Pinned => "pinned_setting",
            Self::DynamicSetConfig => "dynamic_set_config",
            Self::StandardConformingStrings => "standard_conforming_strings",
            Self::ClientEncoding => "client_encoding",
            Self::PgSettings => "pg_settings_update",
            Self::FunctionCall => "function_call",
            Self::FunctionLanguage => "function_language",
            Self::FunctionBody => "function_body",
            Self::DynamicSql => "dynamic_sql",
        }
    }

    /// The ErrorResponse message (iron-proxy's text for iron-proxy's cases).
    pub fn message(self) -> String {
        let reason = match self {
            Self::Role => {
                "role is managed by the proxy; clients may not issue SET ROLE / SET SESSION AUTHORIZATION / RESET ROLE / set_config('role',...) / set_config('session_authorization',...)"
            }
            Self::DoBlock => {
                "DO blocks are not supported (their plpgsql body cannot be inspected for embedded role changes)"
            }
            Self::ResetAll => "RESET ALL would reset the proxy-managed role and session settings",
            Self::DiscardAll => {
                "DISCARD ALL would reset the proxy-managed role and session settings"
            }
            Self::Pinned => {
                "this session setting is managed by the proxy; clients may not SET / RESET / set_config it"
            }
            Self::DynamicSetConfig => {
                "set_config with a setting name that is not a string literal is not allowed (it could name the role or a pinned setting)"
            }
            Self::StandardConformingStrings => {
                "standard_conforming_strings is managed by the proxy and stays on"
            }
            Self::ClientEncoding => {
                "this client encoding is not supported by the proxy (its multibyte characters can hide quotes from the SQL parser)"
            }
            Self::PgSettings => {
                "updating pg_settings (directly or through a view or rule) changes session settings, the role included"
            }
            Self::FunctionCall => {
                "the fastpath FunctionCall message is not supported (it calls a function with no SQL text the policy can check)"
            }
            Self::FunctionLanguage => {
                "functions and procedures may be created only in LANGUAGE sql or plpgsql (a body in another language cannot be inspected for embedded role changes)"
            }
            Self::FunctionBody => {
                "this function body cannot be inspected for embedded role changes (it does not parse, or nests function definitions too deeply)"
            }
            Self::DynamicSql => {
                "EXECUTE in a plpgsql body is not supported (dynamic SQL cannot be inspected for embedded role changes)"
            }
        };
        format!("{PREFIX}{reason}")
    }
}

/// The policy of one route: its pinned settings and a cache of verdicts.
pub struct Policy {
    pinned: HashSet<String>,
    cache: Mutex<LruCache<Box<str>, Option<Refusal>>>,
}

impl Policy {
    pub fn new<'a>(pinned: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            pinned: pinned.into_iter().map(|s| s.to_ascii_lowercase()).collect(),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// `Some` when the query (one or more statements) must not reach the server.
    pub fn check(&self, sql: &str) -> Option<Refusal> {
        if !needs_parse(sql) {
            return None;
        }
        if let Some(v) = self.cache.lock().get(sql) {
            return *v;
        }
        let verdict = classify(sql, &self.pinned);
        self.cache.lock().put(sql.into(), verdict);
        verdict
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().len()
    }
}

/// Whether `sql` could hold a refused construct. Sound because each one needs, in the text, a
/// keyword or identifier spelled with these letters: `SET`/`RESET` (every setting change,
/// function `SET` clauses, `SESSION AUTHORIZATION`), `set_config`, `DO`, `DISCARD`, and
/// `FUNCTION`/`PROCEDURE` (a body is a string literal, whose escapes can spell anything);
/// keywords cannot be escaped, and an identifier can be spelled otherwise only with `U&"..."`
/// escapes (hence `&`). Anything non-ASCII goes to the parser too.
pub fn needs_parse(sql: &str) -> bool {
    let b = sql.as_bytes();
    if b.iter().any(|c| !c.is_ascii() || *c == b'&') {
        return true;
    }
    let has = |word: &[u8]| b.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
    has(b"set") || has(b"do") || has(b"discard") || has(b"function") || has(b"procedure")
}

/// Parses and walks every statement. Unparsable text is relayed (the server reports it).
pub fn classify(sql: &str, pinned: &HashSet<String>) -> Option<Refusal> {
    let scope = Scope { pinned, depth: 0 };
    verdict(sql, pg_query::ParserOptions::DEFAULT, scope).unwrap_or(None)
}

/// What the walk of one text needs: the pinned settings, and how deep in function bodies the
/// text is (0: the client's statement).
#[derive(Clone, Copy)]
pub(super) struct Scope<'a> {
    pub pinned: &'a HashSet<String>,
    pub depth: u8,
}

/// The verdict on `sql` parsed in `mode`; `Err` when it does not parse.
pub(super) fn verdict(
    sql: &str,
    mode: pg_query::ParserOptions,
    scope: Scope<'_>,
) -> Result<Option<Refusal>, pg_query::Error> {
    let parsed = pg_query::parse(sql, mode)?;
    let tree = serde_json::to_value(&parsed.protobuf)
        .map_err(|e| pg_query::Error::InvalidJson(e.to_string()))?;
    let stmts = tree["stmts"].as_array().map(|s| s.iter().collect());
    for raw in stmts.unwrap_or_else(|| vec![&tree]) {
        let mut w = Walk {
            scope,
            found: None,
            plpgsql: false,
            functions: 0,
        };
        w.walk(raw);
        if w.found.is_none() && w.plpgsql {
            // Compiled after the walk, from this statement's text alone (libpg_query compiles
            // every function in the text it is given).
            w.found = match statement_text(sql, raw) {
                Some(text) => routine::plpgsql(text, scope, w.functions),
                None => Some(Refusal::FunctionBody),
            };
        }
        if w.found.is_some() {
            return Ok(w.found);
        }
    }
    Ok(None)
}

/// The text of one top-level statement (`stmt_len` 0: to the end), by its byte offsets.
fn statement_text<'s>(sql: &'s str, raw: &Value) -> Option<&'s str> {
    let start = usize::try_from(raw["stmt_location"].as_u64().unwrap_or(0)).ok()?;
    let len = usize::try_from(raw["stmt_len"].as_u64().unwrap_or(0)).ok()?;
    let end = if len == 0 {
        sql.len()
    } else {
        start.checked_add(len)?
    };
    sql.get(start..end)
}

struct Walk<'a> {
    scope: Scope<'a>,
    found: Option<Refusal>,
    /// A `LANGUAGE plpgsql` function or procedure was seen.
    plpgsql: bool,
    /// `CreateFunctionStmt` nodes seen, in any language.
    functions: usize,
}

impl Walk<'_> {
    fn walk(&mut self, v: &Value) {
        if self.found.is_some() {
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let verdict = self.node(k, child);
                    if verdict.is_some() {
                        self.found = verdict;
                        return;
                    }
                    self.walk(child);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| self.walk(i)),
            _ => {}
        }
    }

    /// The verdict on one node of the tree (its children are walked after).
    fn node(&mut self, kind: &str, node: &Value) -> Option<Refusal> {
        let pinned = self.scope.pinned;
        match kind {
            "VariableSetStmt" => variable_set(node, pinned),
            "DoStmt" => Some(Refusal::DoBlock),
            // DiscardMode::DiscardAll
            "DiscardStmt" if node["target"] == 1 => Some(Refusal::DiscardAll),
            "FuncCall" => func_call(node, pinned),
            // An UPDATE of pg_settings is set_config for any setting its WHERE selects.
            "UpdateStmt" | "MergeStmt" | "ViewStmt" | "RuleStmt" if mentions_pg_settings(node) => {
                Some(Refusal::PgSettings)
            }
            "CreateFunctionStmt" => {
                self.functions += 1;
                self.create_function(node)
            }
            _ => None,
        }
    }

    fn create_function(&mut self, node: &Value) -> Option<Refusal> {
        match routine::create_function(node, self.scope) {
            routine::Body::Checked(verdict) => verdict,
            routine::Body::Plpgsql => {
                self.plpgsql = true;
                None
            }
        }
    }
}

fn mentions_pg_settings(v: &Value) -> bool {
    match v {
        // A RangeVar, bare (an UPDATE's target) or as a node (FROM items).
        Value::Object(map) => {
            map.get("relname").is_some_and(|r| r == "pg_settings")
                || map.values().any(mentions_pg_settings)
        }
        Value::Array(items) => items.iter().any(mentions_pg_settings),
        _ => false,
    }
}

/// `VariableSetKind`: VAR_SET_VALUE = 1, VAR_RESET_ALL = 6.
fn variable_set(stmt: &Value, pinned: &HashSet<String>) -> Option<Refusal> {
    if stmt["kind"] == 6 {
        return Some(Refusal::ResetAll);
    }
    let name = stmt["name"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let value = if stmt["kind"] == 1 {
        stmt["args"].get(0).map(const_value)
    } else {
        None
    };
    setting_change(&name, value.as_ref(), pinned)
}

/// A literal's value: `Some(Some(text))` for a constant, `Some(None)` for anything else.
fn const_value(node: &Value) -> Option<String> {
    let c = node.get("node")?.get("AConst")?;
    let val = c.get("val")?;
    if let Some(s) = val.get("Sval") {
        return s["sval"].as_str().map(str::to_string);
    }
    if let Some(i) = val.get("Ival") {
        return Some(i["ival"].as_i64().unwrap_or(0).to_string());
    }
    if let Some(b) = val.get("Boolval") {
        return Some(b["boolval"].as_bool().unwrap_or(false).to_string());
    }
    None
}

/// Changing setting `name` (lower case) to `value` (`None`: reset or default; `Some(None)`:
/// not a literal).
fn setting_change(
    name: &str,
    value: Option<&Option<String>>,
    pinned: &HashSet<String>,
) -> Option<Refusal> {
    if ROLE_SETTINGS.contains(&name) {
        return Some(Refusal::Role);
    }
    if pinned.contains(name) {
        return Some(Refusal::Pinned);
    }
    let literal = value
        .and_then(|v| v.as_deref())
        .map(str::to_ascii_lowercase);
    match name {
        "standard_conforming_strings" => match literal.as_deref() {
            Some("on" | "true" | "yes" | "1") => None,
            _ => Some(Refusal::StandardConformingStrings),
        },
        "client_encoding" => match (value, literal.as_deref()) {
            (None, _) => None,
            (Some(_), Some(enc)) if encoding_is_safe(enc) => None,
            _ => Some(Refusal::ClientEncoding),
        },
        _ => None,
    }
}

fn func_call(call: &Value, pinned: &HashSet<String>) -> Option<Refusal> {
    let name = call["funcname"]
        .as_array()
        .and_then(|parts| parts.last())
        .and_then(|n| n["node"]["String"]["sval"].as_str())?;
    if name != "set_config" {
        return None;
    }
    let args = call["args"].as_array()?;
    let named = |want: &str| {
        args.iter().find_map(|a| {
            let n = a.get("node")?.get("NamedArgExpr")?;
            (n["name"] == want).then(|| n["arg"].clone())
        })
    };
    let positional = |i: usize| {
        args.get(i)
            .filter(|a| a["node"].get("NamedArgExpr").is_none())
            .cloned()
    };
    let setting = positional(0).or_else(|| named("setting_name"));
    let value = positional(1).or_else(|| named("new_value"));
    let Some(setting) = setting else {
        return Some(Refusal::DynamicSetConfig);
    };
    if setting["node"]["AConst"]["isnull"] == true {
        return None; // set_config is strict: a NULL name changes nothing
    }
    let Some(name) = const_value(&setting) else {
        return Some(Refusal::DynamicSetConfig);
    };
    let value = Some(value.as_ref().and_then(const_value));
    setting_change(&name.to_ascii_lowercase(), value.as_ref(), pinned)
}

/// Client encodings in which every byte below 0x80 is the ASCII character (so `'` and `\` mean
/// what the parser thinks). Names compare as PostgreSQL does: case and punctuation ignored.
pub fn encoding_is_safe(name: &str) -> bool {
    const UNSAFE: [&str; 21] = [
        "sjis",
        "shiftjis",
        "mskanji",
        "win932",
        "windows932",
        "cp932",
        "shiftjis2004",
        "big5",
        "win950",
        "windows950",
        "cp950",
        "gbk",
        "win936",
        "windows936",
        "cp936",
        "uhc",
        "win949",
        "windows949",
        "cp949",
        "gb18030",
        "johab",
    ];
    let norm: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    !norm.is_empty() && !UNSAFE.contains(&norm.as_str())
}

/// The statement with its constants replaced by `$n`, for the audit log: a refused statement
/// may carry a literal the operator should not see in logs.
pub fn normalized(sql: &str) -> Option<String> {
    let mut n = pg_query::normalize(sql).ok()?;
    if n.len() > 1024 {
        let mut cut = 1024;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    Some(n)
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
