use super::*;

fn policy() -> Policy {
    Policy::new(["app.tenant", "search_path"])
}

#[test]
fn role_changes_anywhere_are_refused() {
    let p = policy();
    for sql in [
        "SET ROLE admin",
        "set role admin",
        "SET LOCAL ROLE admin",
        "SET SESSION ROLE admin",
        "SET ROLE NONE",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION admin",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET SESSION AUTHORIZATION",
        "SELECT set_config('role', 'admin', false)",
        "SELECT pg_catalog.set_config('ROLE', 'admin', false)",
        "SELECT set_config('session_authorization', 'admin', false)",
        "WITH x AS (SELECT set_config('role','admin',false)) SELECT * FROM x",
        "PREPARE p AS SELECT set_config('role','admin',false)",
        "SELECT * FROM set_config('role','admin',false)",
        "SELECT set_config(setting_name => 'role', new_value => 'admin', is_local => false)",
        "SELECT 1; SET ROLE admin",
        "SELECT U&\"\\0073et_config\"('role','admin',false)",
        "SELECT set_config(E'rol\\x65', 'admin', false)",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET role = admin AS 'SELECT 1'",
        "ALTER FUNCTION f() SET role = admin",
        "EXPLAIN ANALYZE SELECT set_config('role','admin',false)",
    ] {
        assert_eq!(p.check(sql), Some(Refusal::Role), "{sql}");
    }
}

#[test]
fn other_refusals() {
    let p = policy();
    let cases = [
        ("DO $$BEGIN PERFORM 1; END$$", Refusal::DoBlock),
        ("do 'begin end'", Refusal::DoBlock),
        ("RESET ALL", Refusal::ResetAll),
        ("DISCARD ALL", Refusal::DiscardAll),
        ("SET app.tenant = 'other'", Refusal::Pinned),
        ("SET APP.TENANT TO other", Refusal::Pinned),
        ("RESET search_path", Refusal::Pinned),
        ("SET LOCAL search_path = public", Refusal::Pinned),
        (
            "SELECT set_config('app.tenant', 'x', true)",
            Refusal::Pinned,
        ),
        (
            "SELECT set_config($1, 'x', false)",
            Refusal::DynamicSetConfig,
        ),
        (
            "SELECT set_config(name, 'x', false) FROM t",
            Refusal::DynamicSetConfig,
        ),
        (
            "SELECT set_config('ro' || 'le', 'x', false)",
            Refusal::DynamicSetConfig,
        ),
        (
            "SET standard_conforming_strings = off",
            Refusal::StandardConformingStrings,
        ),
        (
            "RESET standard_conforming_strings",
            Refusal::StandardConformingStrings,
        ),
        (
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            Refusal::StandardConformingStrings,
        ),
        ("SET client_encoding = 'SJIS'", Refusal::ClientEncoding),
        ("SET NAMES 'big5'", Refusal::ClientEncoding),
        (
            "UPDATE pg_settings SET setting = 'admin' WHERE name = 'role'",
            Refusal::PgSettings,
        ),
        (
            "UPDATE pg_catalog.pg_settings SET setting = 'x' WHERE name = $1",
            Refusal::PgSettings,
        ),
        (
            "WITH u AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT * FROM u",
            Refusal::PgSettings,
        ),
        (
            "CREATE VIEW s AS SELECT * FROM pg_settings",
            Refusal::PgSettings,
        ),
        (
            "CREATE RULE r AS ON UPDATE TO t DO ALSO UPDATE pg_settings SET setting = 'x'",
            Refusal::PgSettings,
        ),
        (
            "SELECT set_config('client_encoding', $1, false)",
            Refusal::ClientEncoding,
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(p.check(sql), Some(want), "{sql}");
    }
}

#[test]
fn ordinary_statements_pass() {
    let p = policy();
    for sql in [
        "SELECT 1",
        "SELECT 'SET ROLE admin'",
        "SELECT $$ DO $$",
        "-- SET ROLE admin\nSELECT 1",
        "/* DISCARD ALL */ SELECT 1",
        "SET statement_timeout = '5s'",
        "SET LOCAL work_mem = '64MB'",
        "RESET statement_timeout",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SELECT set_config('app.other', 'x', false)",
        "SELECT current_setting('role')",
        "SELECT name, setting FROM pg_settings WHERE name = 'role'",
        "SHOW role",
        "SHOW app.tenant",
        "DISCARD PLANS",
        "DISCARD TEMP",
        "UPDATE t SET a = 1 WHERE id = 2",
        "SET standard_conforming_strings = on",
        "SET client_encoding = 'UTF8'",
        "SET NAMES 'LATIN1'",
        "RESET client_encoding",
        "COPY t FROM STDIN",
        "SELEC broken syntax (",
        "",
    ] {
        assert_eq!(p.check(sql), None, "{sql}");
    }
}

#[test]
fn pre_check_is_lexical_and_cache_holds_verdicts() {
    assert!(!needs_parse(
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42"
    ));
    assert!(!needs_parse("INSERT INTO t VALUES (1)"));
    assert!(needs_parse("select 1; ReSeT all"));
    assert!(needs_parse("SELECT U&\"x\""));
    assert!(needs_parse("SELECT 'é'"));
    assert!(needs_parse("do 'x'"));
    let p = policy();
    assert_eq!(p.check("SELECT 1"), None);
    assert_eq!(p.cached(), 0, "the pre-check passed it without parsing");
    assert_eq!(p.check("SET ROLE x"), Some(Refusal::Role));
    assert_eq!(p.check("SET ROLE x"), Some(Refusal::Role));
    assert_eq!(p.cached(), 1);
}

#[test]
fn refusal_codes_round_trip_and_messages() {
    for r in Refusal::ALL {
        assert_eq!(Refusal::from_code(r as u8), Some(r));
        assert!(r.message().starts_with("blocked by iron-proxy policy: "));
    }
    assert_eq!(Refusal::DoBlock.sqlstate(), "0A000");
    assert_eq!(Refusal::Role.sqlstate(), "42501");
    assert_eq!(
        Refusal::ResetAll.message(),
        "blocked by iron-proxy policy: RESET ALL would reset the proxy-managed role and session settings"
    );
}

#[test]
fn audit_text_hides_literals() {
    let n = normalized("SET ROLE admin; SELECT set_config('role', 'secret-value', false)").unwrap();
    assert!(!n.contains("secret-value"), "{n}");
}

#[test]
fn encodings() {
    for ok in ["UTF8", "utf-8", "LATIN1", "SQL_ASCII", "EUC_JP", "WIN1252"] {
        assert!(encoding_is_safe(ok), "{ok}");
    }
    for bad in [
        "SJIS",
        "Shift_JIS",
        "BIG5",
        "GBK",
        "gb18030",
        "UHC",
        "JOHAB",
        "WIN932",
        "",
    ] {
        assert!(!encoding_is_safe(bad), "{bad}");
    }
}
