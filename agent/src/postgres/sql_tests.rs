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

/// Function and procedure definitions and the refusal each gets.
const FUNCTION_REFUSALS: &[(&str, Refusal)] = &[
    // LANGUAGE sql: string bodies are parsed; SQL-standard bodies are in the tree.
    (
        "CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql AS $$SELECT set_config('role','none',false)$$",
        Refusal::Role,
    ),
    (
        "CREATE OR REPLACE FUNCTION f() RETURNS text AS 'SELECT set_config(''role'', ''admin'', false)' LANGUAGE sql",
        Refusal::Role,
    ),
    // The escape hides `set` from the lexical pre-check; `FUNCTION` does not hide.
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS E'SELECT \\x73et_config(''role'',''x'',false)'",
        Refusal::Role,
    ),
    (
        "CREATE PROCEDURE p() LANGUAGE sql AS $$SET ROLE admin$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f(n text) RETURNS text LANGUAGE sql AS $$SELECT set_config(n, 'x', false)$$",
        Refusal::DynamicSetConfig,
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$SELECT 1; SET app.tenant = 'x'$$",
        Refusal::Pinned,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql RETURN set_config('role','x',false)",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT set_config('role','x',false); END",
        Refusal::Role,
    ),
    // A SQL body that creates a PL/pgSQL function.
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $a$CREATE FUNCTION pg_temp.g() RETURNS void LANGUAGE plpgsql AS $b$BEGIN SET ROLE admin; END$b$$a$",
        Refusal::Role,
    ),
    // PL/pgSQL: statements, PERFORM, assignments, defaults, conditions, RETURN.
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('role','admin',false); END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN SET ROLE admin; END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$DECLARE r text; BEGIN r := set_config('role','admin',false); RETURN r; END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$DECLARE r text := set_config('role','admin',false); BEGIN RETURN r; END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$BEGIN IF set_config('role','admin',false) IS NULL THEN RETURN 'a'; END IF; RETURN 'b'; END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$BEGIN RETURN set_config('role','admin',false); END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION f(n text) RETURNS void LANGUAGE plpgsql AS $$BEGIN PERFORM set_config(n, 'x', false); END$$",
        Refusal::DynamicSetConfig,
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN RESET ALL; END$$",
        Refusal::ResetAll,
    ),
    (
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$BEGIN SET ROLE admin; END$$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('role','admin',false); RETURN NEW; END$$",
        Refusal::Role,
    ),
    // Several functions in one query: each compiled on its own.
    (
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN SET ROLE admin; END$$",
        Refusal::Role,
    ),
    // Trigger bodies (compiled wrapped in a block that declares NEW, OLD and TG_*).
    (
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $x$BEGIN RAISE NOTICE '$iron_agent_body$'; SET ROLE admin; RETURN NEW; END;$x$",
        Refusal::Role,
    ),
    (
        "CREATE FUNCTION t() RETURNS pg_catalog.trigger LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SELECT 1'; RETURN NEW; END$$",
        Refusal::DynamicSql,
    ),
    (
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END; BEGIN$$",
        Refusal::FunctionBody,
    ),
    // Dynamic SQL in every form.
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SELECT 1'; END$$",
        Refusal::DynamicSql,
    ),
    (
        "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE plpgsql AS $$BEGIN RETURN QUERY EXECUTE 'SELECT 1'; END$$",
        Refusal::DynamicSql,
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END$$",
        Refusal::DynamicSql,
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'SELECT 1'; END$$",
        Refusal::DynamicSql,
    ),
    // Bodies that cannot be read.
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE plperl AS 'return 1'",
        Refusal::FunctionLanguage,
    ),
    (
        "CREATE FUNCTION f() RETURNS int AS 'lib', 'sym' LANGUAGE c",
        Refusal::FunctionLanguage,
    ),
    (
        "CREATE FUNCTION f() RETURNS text LANGUAGE internal AS 'set_config_by_name'",
        Refusal::FunctionLanguage,
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE \"SQL\" AS 'SELECT 1'",
        Refusal::FunctionLanguage,
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELEC broken ($$",
        Refusal::FunctionBody,
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN IF THEN END$$",
        Refusal::FunctionBody,
    ),
];

#[test]
fn function_bodies_get_the_statement_policy() {
    let p = policy();
    for (sql, want) in FUNCTION_REFUSALS {
        assert_eq!(p.check(sql), Some(*want), "{sql}");
    }
}

#[test]
fn ordinary_function_bodies_pass() {
    let p = policy();
    for sql in [
        "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'",
        "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE RETURN a + b",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET statement_timeout = '5s' AS 'SELECT 1'",
        "CREATE PROCEDURE ins(n int) LANGUAGE sql AS $$INSERT INTO items VALUES (n, 'x')$$",
        "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$",
        "CREATE FUNCTION c() RETURNS int LANGUAGE plpgsql AS $$DECLARE n int := 0; BEGIN SELECT count(*) INTO n FROM items; FOR i IN 1..n LOOP n := n + i; END LOOP; PERFORM set_config('app.other', 'x', true); RAISE NOTICE 'n = %', n; RETURN n; EXCEPTION WHEN others THEN RETURN -1; END$$",
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$\n<<outer>>\nDECLARE n int;\nBEGIN\n  IF TG_OP = 'INSERT' THEN NEW.x := TG_ARGV[0]; END IF;\n  RETURN NEW;\nEND; -- done$$",
        "CREATE FUNCTION e() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE '% %', tg_event, tg_tag; END$$",
        "CREATE FUNCTION r() RETURNS SETOF items LANGUAGE plpgsql AS $$BEGIN RETURN QUERY SELECT * FROM items; END$$",
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$; SELECT 'é'",
        "DROP FUNCTION f()",
    ] {
        assert_eq!(p.check(sql), None, "{sql}");
    }
}

/// Functions created by function bodies, `n` deep.
fn nested(n: usize) -> String {
    (1..=n).fold("SELECT 1".to_string(), |body, i| {
        format!("CREATE FUNCTION pg_temp.f{i}() RETURNS void LANGUAGE sql AS $q{i}${body}$q{i}$")
    })
}

#[test]
fn function_bodies_nest_a_bounded_depth() {
    let p = policy();
    assert_eq!(p.check(&nested(4)), None);
    assert_eq!(p.check(&nested(5)), Some(Refusal::FunctionBody));
    assert!(needs_parse(
        "create function f() returns int language sql as 'x'"
    ));
    assert!(needs_parse("CREATE PROCEDURE p() AS 'x'"));
}
