//! The PostgreSQL proxy against a real PostgreSQL (Debian's server, a throwaway cluster per
//! test): psql, tokio-postgres and psycopg log in with the proxy credential; the session runs
//! as the pinned role with the pinned settings; refused statements answer their SQLSTATE on
//! the simple and extended protocols and the session stays usable; login errors; upstream TLS
//! per sslmode; client TLS with the agent's CA; audit records; reconfiguration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use iron_agent_tests::postgres::{
    Cluster, PROXY_PASSWORD, PROXY_USER, UPSTREAM_PASSWORD, agent_config, proxy_block, psql,
};
use iron_agent_tests::{Agent, AgentConfig, TestCa};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const SETTINGS: &[(&str, &str)] = &[("app.tenant", "acme"), ("statement_timeout", "7s")];

/// An agent proxying `appdb` (role tenant_role, pinned settings) and `otherdb` (no role).
fn start_agent(cluster: &Cluster, sslmode: &str, extra_env: &[(&str, &str)]) -> Agent {
    start_agent_auth(cluster, sslmode, extra_env, None)
}

/// [`start_agent`] with `client.auth` set (`None`: the default, SCRAM-SHA-256).
fn start_agent_auth(
    cluster: &Cluster,
    sslmode: &str,
    extra_env: &[(&str, &str)],
    auth: Option<&str>,
) -> Agent {
    let mut block = proxy_block(
        "127.0.0.1:0",
        &[
            ("appdb", Some("tenant_role"), SETTINGS),
            ("otherdb", None, &[]),
        ],
    );
    block.client.auth = auth.map(str::to_string);
    let mut b = Agent::with(&agent_config(block))
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env("PG_DSN_APPDB", cluster.dsn(None, "appdb", sslmode))
        // The key=value form, for the second route.
        .env(
            "PG_DSN_OTHERDB",
            format!(
                "host={} port={} dbname=otherdb user=app_login password='{UPSTREAM_PASSWORD}' sslmode={sslmode}",
                cluster.addr.ip(),
                cluster.addr.port()
            ),
        );
    for (k, v) in extra_env {
        b = b.env(k, *v);
    }
    b.start()
}

fn conninfo(agent: &Agent, db: &str) -> String {
    let a = agent.addr("postgres");
    format!(
        "host={} port={} dbname={db} user={PROXY_USER} sslmode=disable",
        a.ip(),
        a.port()
    )
}

async fn connect(
    agent: &Agent,
    db: &str,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let a = agent.addr("postgres");
    let (client, conn) = tokio_postgres::Config::new()
        .host(a.ip().to_string())
        .port(a.port())
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Every refused statement, its SQLSTATE and a word of its message.
const REFUSED: [(&str, &str, &str); 10] = [
    (
        "SET ROLE admin_role",
        "42501",
        "role is managed by the proxy",
    ),
    ("RESET ROLE", "42501", "role is managed by the proxy"),
    (
        "SET SESSION AUTHORIZATION app_login",
        "42501",
        "role is managed by the proxy",
    ),
    (
        "SELECT set_config('role', 'admin_role', false)",
        "42501",
        "role is managed by the proxy",
    ),
    (
        "DO $$BEGIN EXECUTE 'SET ROLE admin_role'; END$$",
        "0A000",
        "DO blocks are not supported",
    ),
    ("RESET ALL", "42501", "RESET ALL would reset"),
    ("DISCARD ALL", "42501", "DISCARD ALL would reset"),
    (
        "SET app.tenant = 'other'",
        "42501",
        "this session setting is managed by the proxy",
    ),
    (
        "SELECT set_config(current_user::text, 'x', false)",
        "42501",
        "not a string literal",
    ),
    (
        "UPDATE pg_settings SET setting = 'admin_role' WHERE name = 'role'",
        "42501",
        "updating pg_settings",
    ),
];

#[test]
fn psql_runs_as_the_pinned_role_and_refused_statements_keep_the_session() {
    let cluster = Cluster::start();
    let agent = start_agent(&cluster, "disable", &[]);
    let mut script = String::from(
        "SELECT current_user, session_user, current_setting('app.tenant'), current_setting('statement_timeout');\n",
    );
    for (sql, _, _) in REFUSED {
        script.push_str(sql);
        script.push_str(";\nSELECT 'still-usable', current_user;\n");
    }
    script.push_str("SELECT count(*) FROM items;\nSELECT * FROM secrets;\n");
    let (code, out) = psql(&conninfo(&agent, "appdb"), PROXY_PASSWORD, &script);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tenant_role|app_login|acme|7s"), "{out}");
    for (sql, state, msg) in REFUSED {
        let line = format!("ERROR:  {state}: blocked by iron-proxy policy: ");
        assert!(out.contains(&line) && out.contains(msg), "{sql}: {out}");
    }
    assert_eq!(
        out.matches("still-usable|tenant_role").count(),
        REFUSED.len(),
        "{out}"
    );
    assert!(
        out.contains("\n2\n"),
        "items readable by the pinned role: {out}"
    );
    assert!(out.contains("permission denied for table secrets"), "{out}");
    assert!(!out.contains(UPSTREAM_PASSWORD));

    // One session record, one record per refused statement; no credential anywhere.
    let session = agent.audit_where(|v| v["postgres"]["event"] == "session");
    assert_eq!(session["action"], "allow", "{session}");
    assert_eq!(session["protocol"], "postgres");
    let pg = &session["postgres"];
    assert_eq!(pg["database"], "appdb");
    assert_eq!(pg["user"], PROXY_USER);
    assert_eq!(pg["role"], "tenant_role");
    assert_eq!(pg["upstream"], cluster.addr.to_string());
    assert_eq!(pg["statements_refused"], REFUSED.len() as u64);
    assert!(pg["statements"].as_u64().unwrap() >= 2 * REFUSED.len() as u64 + 3);
    assert!(pg["bytes_from_client"].as_u64().unwrap() > 100);
    assert!(pg["bytes_to_client"].as_u64().unwrap() > 100);
    let refused = agent.audits_where(REFUSED.len(), |v| v["postgres"]["event"] == "statement");
    assert!(
        refused
            .iter()
            .all(|r| r["action"] == "reject" && r["rejected_by"] == "postgres")
    );
    let role = refused
        .iter()
        .find(|r| r["reason"] == "role_change")
        .unwrap();
    assert_eq!(role["postgres"]["sqlstate"], "42501");
    assert!(
        role["postgres"]["statement"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("role")
    );
    agent.assert_not_logged(UPSTREAM_PASSWORD);
    agent.assert_not_logged(PROXY_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_extended_protocol_refusals_pipelining_and_transactions() {
    let cluster = Cluster::start();
    let agent = start_agent(&cluster, "disable", &[]);
    let client = connect(&agent, "appdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT current_user::text, current_setting('app.tenant')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "tenant_role");
    assert_eq!(row.get::<_, String>(1), "acme");
    for (sql, state, msg) in REFUSED {
        // Extended protocol: Parse/Bind/Describe/Execute/Sync.
        let err = client.query(sql, &[]).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), state, "{sql}");
        assert!(db.message().contains(msg), "{sql}: {}", db.message());
        // Simple protocol.
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some(state), "{sql}");
        let n: i32 = client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 42);
    }
    // A parameter cannot smuggle the role in through set_config.
    let err = client
        .query("SELECT set_config($1, 'admin_role', false)", &[&"role"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // Pipelined: answers stay in order around the refused statement.
    let (a, b, c) = tokio::join!(
        client.query_one("SELECT 1", &[]),
        client.query("SET ROLE admin_role", &[]),
        client.query_one("SELECT current_user::text", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(
        b.unwrap_err().code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(c.unwrap().get::<_, String>(0), "tenant_role");

    // In a transaction block the refusal aborts the transaction, as a server error would.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SET ROLE admin_role").await.is_err());
    let err = client.query_one("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "tenant_role");

    // Route without a role: the DSN's login user; COPY relayed byte for byte.
    let other = connect(&agent, "otherdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .unwrap();
    let who: String = other
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app_login");
    other
        .batch_execute("CREATE TABLE t(a int, b text)")
        .await
        .unwrap();
    {
        use futures_util::SinkExt;
        let sink = other.copy_in("COPY t FROM STDIN").await.unwrap();
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n"))
            .await
            .unwrap();
        assert_eq!(sink.finish().await.unwrap(), 2);
    }
    {
        use futures_util::TryStreamExt;
        let chunks: Vec<bytes::Bytes> = other
            .copy_out("COPY t TO STDOUT")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(chunks.concat(), b"1\tone\n2\ttwo\n");
    }
    drop(other);
    drop(client);
    agent.assert_not_logged(UPSTREAM_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_name_their_cause() {
    let cluster = Cluster::start();
    let agent = start_agent(&cluster, "disable", &[]);
    let fatal = |r: &Result<Client, tokio_postgres::Error>| {
        let db = r
            .as_ref()
            .err()
            .and_then(|e| e.as_db_error())
            .expect("a server error");
        (db.code().code().to_string(), db.message().to_string())
    };
    let unknown_db = connect(&agent, "nodb", PROXY_USER, PROXY_PASSWORD).await;
    assert_eq!(
        fatal(&unknown_db),
        ("3D000".into(), "no upstream for database \"nodb\"".into())
    );
    let wrong_user = connect(&agent, "appdb", "mallory", PROXY_PASSWORD).await;
    assert_eq!(
        fatal(&wrong_user),
        ("28000".into(), "unknown user \"mallory\"".into())
    );
    let wrong_pw = connect(&agent, "appdb", PROXY_USER, "nope").await;
    assert_eq!(
        fatal(&wrong_pw),
        ("28P01".into(), "password authentication failed".into())
    );
    // The upstream's own credential is not the proxy's.
    let upstream_pw = connect(&agent, "appdb", "app_login", UPSTREAM_PASSWORD).await;
    assert_eq!(fatal(&upstream_pw).0, "28000");

    // Startup `options` never reach the server: no role through the back door.
    let a = agent.addr("postgres");
    let (client, conn) = tokio_postgres::Config::new()
        .host(a.ip().to_string())
        .port(a.port())
        .user(PROXY_USER)
        .password(PROXY_PASSWORD)
        .dbname("otherdb")
        .options("-c role=admin_role")
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(who(&client).await, "app_login");
    // An encoding that can hide quotes from the parser is refused at login.
    let (code, out) = psql(
        &format!("{} client_encoding=SJIS", conninfo(&agent, "appdb")),
        PROXY_PASSWORD,
        "SELECT 1;\n",
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("client encoding is not supported by the proxy"),
        "{out}"
    );

    let reasons: Vec<String> = agent
        .audits_where(5, |v| {
            v["action"] == "reject" && v["postgres"]["event"] == "session"
        })
        .iter()
        .map(|v| v["reason"].as_str().unwrap().to_string())
        .collect();
    for r in [
        "unknown_database",
        "unknown_user",
        "auth_failed",
        "client_encoding",
    ] {
        assert!(reasons.iter().any(|x| x == r), "{reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verify_full_against_ssl_cert_file() {
    let cluster = Cluster::start();
    let ca = cluster.ca_file();
    let ca = ca.to_string_lossy().into_owned();
    // verify-full by host name, trusting the test CA through SSL_CERT_FILE.
    let config = agent_config(proxy_block(
        "127.0.0.1:0",
        &[("appdb", Some("tenant_role"), &[])],
    ));
    let agent = Agent::with(&config)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env(
            "PG_DSN_APPDB",
            cluster.dsn(Some("localhost"), "appdb", "verify-full"),
        )
        .env("SSL_CERT_FILE", &ca)
        .start();
    let client = connect(&agent, "appdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    // The pinned role cannot see its own backend in pg_stat_ssl; the superuser can.
    let ssl = cluster.superuser_sql(
        "postgres",
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'app_login'",
    );
    assert_eq!(ssl, "t", "the upstream session is encrypted");
    let session_tls = async {
        drop(client);
        agent.audit_where(|v| v["postgres"]["event"] == "session")
    }
    .await;
    assert_eq!(session_tls["postgres"]["upstream_tls"], true);

    // Without the CA the certificate is not trusted: the client gets 08006, the log says why.
    let untrusted = Agent::with(&config)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env(
            "PG_DSN_APPDB",
            cluster.dsn(Some("localhost"), "appdb", "verify-full"),
        )
        .start();
    let err = connect(&untrusted, "appdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");
    assert!(
        untrusted.wait_for_log("certificate"),
        "{}",
        untrusted.logs()
    );

    // verify-full checks the name: the certificate does not name 127.0.0.1. verify-ca does not.
    let by_ip = Agent::with(&config)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env("PG_DSN_APPDB", cluster.dsn(None, "appdb", "verify-full"))
        .env("SSL_CERT_FILE", &ca)
        .start();
    assert!(
        connect(&by_ip, "appdb", PROXY_USER, PROXY_PASSWORD)
            .await
            .is_err()
    );
    let ca_only = Agent::with(&config)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env(
            "PG_DSN_APPDB",
            format!(
                "{}&sslrootcert={ca}",
                cluster.dsn(None, "appdb", "verify-ca")
            ),
        )
        .start();
    connect(&ca_only, "appdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .unwrap();
}

#[test]
fn psql_over_client_tls_with_the_agents_ca() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let agent_ca = TestCa::new("agent CA");
    let (cert, key) = agent_ca.write(dir.path());
    let mut block = proxy_block("127.0.0.1:0", &[("appdb", Some("tenant_role"), &[])]);
    block.tls = true;
    let cfg = AgentConfig::loopback(&cert, &key).with(|c| c.postgres = Some(block));
    let agent = Agent::with(&cfg)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env("PG_DSN_APPDB", cluster.dsn(None, "appdb", "disable"))
        .start();
    let port = agent.addr("postgres").port();
    let info = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} dbname=appdb user={PROXY_USER} sslmode=verify-full sslrootcert={}",
        cert.display()
    );
    let (code, out) = psql(&info, PROXY_PASSWORD, "SELECT current_user;\n\\conninfo\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tenant_role"), "{out}");
    assert!(out.contains("SSL connection"), "{out}");
    let rec = agent.audit_where(|v| v["postgres"]["event"] == "session" && v["action"] == "allow");
    assert_eq!(rec["postgres"]["client_tls"], true);
}

#[test]
fn psycopg_logs_in_through_the_proxy() {
    let cluster = Cluster::start();
    let agent = start_agent(&cluster, "prefer", &[]);
    let a = agent.addr("postgres");
    let code = format!(
        "import psycopg\n\
         with psycopg.connect(host='{}', port={}, dbname='appdb', user='{PROXY_USER}', password='{PROXY_PASSWORD}', sslmode='disable') as c:\n\
         \x20   print(c.execute(\"select current_user, current_setting('app.tenant')\").fetchone())\n\
         \x20   try:\n\
         \x20       c.execute('set role admin_role')\n\
         \x20   except psycopg.Error as e:\n\
         \x20       print('refused', e.sqlstate)\n\
         \x20       c.rollback()\n\
         \x20   print(c.execute('select %s::int + 1', (41,)).fetchone())\n",
        a.ip(),
        a.port()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&code)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("('tenant_role', 'acme')"), "{text}");
    assert!(text.contains("refused 42501"), "{text}");
    assert!(text.contains("(42,)"), "{text}");
}

#[test]
fn dsn_database_must_match_the_route() {
    let cluster = Cluster::start();
    let config = agent_config(proxy_block("127.0.0.1:0", &[("appdb", None, &[])]));
    let agent = Agent::with(&config)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env("PG_DSN_APPDB", cluster.dsn(None, "otherdb", "disable"))
        .start();
    let (code, out) = psql(&conninfo(&agent, "appdb"), PROXY_PASSWORD, "SELECT 1;\n");
    assert_ne!(code, 0);
    assert!(
        out.contains("FATAL:  upstream database mismatch: client connected to database \"appdb\" but its DSN connects to \"otherdb\""),
        "{out}"
    );
    let rec = agent.audit_where(|v| v["postgres"]["event"] == "session");
    assert_eq!(rec["action"], "error", "{rec}");
    assert_eq!(rec["postgres"]["sqlstate"], "3D000", "{rec}");
}

/// Reconfiguration through the library (the running agent's reload is
/// `reload::reload_applies_a_changed_postgres_block`), in detail: same address
/// keeps the socket and changes what new sessions get; a new address moves the listener; a bad
/// block leaves the running one alone; an empty block stops it. Sessions in flight continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_restarts_the_listener_and_sessions_continue() {
    use iron_agent::postgres::{Deps, PostgresProxy};
    use std::sync::Arc;

    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, cluster.dsn(None, "appdb", "disable")).unwrap();
    let env = |k: &str| (k == "PG_PROXY_PASSWORD").then(|| PROXY_PASSWORD.to_string());
    let config = |listen: &str, role: &str, password_env: &str| {
        let mut block = proxy_block(listen, &[("appdb", Some(role), &[])]);
        block.client.password_env = password_env.into();
        block.upstreams[0].dsn = serde_json::json!({"type": "file", "path": dsn_file});
        let yaml = agent_config(block).to_yaml();
        iron_agent::config::load_str(&yaml, &|k| (k == password_env).then(|| "set".into())).unwrap()
    };
    let deps = Deps {
        resolver: Arc::new(iron_agent::resolve::Resolver::new(None).unwrap()),
        audit: Arc::new(iron_agent::audit::AuditSink::discard()),
        origins: None,
        env: Arc::new(env),
        user_names: Arc::new(|_| None),
    };
    let proxy = PostgresProxy::new(deps);
    let port = iron_agent_tests::postgres::free_port();
    let first = format!("127.0.0.1:{port}");
    proxy
        .reconfigure(&config(&first, "tenant_role", "PG_PROXY_PASSWORD"))
        .await
        .unwrap();
    let addr = proxy.local_addr().unwrap();
    let c1 = connect_addr(addr, PROXY_PASSWORD).await.unwrap();
    assert_eq!(who(&c1).await, "tenant_role");

    // Same address: the socket stays, new sessions get the new role, c1 keeps its own.
    proxy
        .reconfigure(&config(&first, "admin_role", "PG_PROXY_PASSWORD"))
        .await
        .unwrap();
    assert_eq!(proxy.local_addr(), Some(addr));
    let c2 = connect_addr(addr, PROXY_PASSWORD).await.unwrap();
    assert_eq!(who(&c2).await, "admin_role");
    assert_eq!(who(&c1).await, "tenant_role");

    // A block that cannot be built (its password variable is unset) changes nothing.
    let bad = proxy
        .reconfigure(&config("127.0.0.1:0", "tenant_role", "UNSET_VAR"))
        .await;
    assert!(bad.unwrap_err().to_string().contains("UNSET_VAR"));
    assert_eq!(proxy.local_addr(), Some(addr));
    connect_addr(addr, PROXY_PASSWORD).await.unwrap();

    // Another address: the listener moves; sessions in flight continue.
    proxy
        .reconfigure(&config("127.0.0.1:0", "tenant_role", "PG_PROXY_PASSWORD"))
        .await
        .unwrap();
    let moved = proxy.local_addr().unwrap();
    assert_ne!(moved, addr);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the old listener is closed"
    );
    assert_eq!(
        who(&connect_addr(moved, PROXY_PASSWORD).await.unwrap()).await,
        "tenant_role"
    );
    assert_eq!(who(&c1).await, "tenant_role");
    assert_eq!(who(&c2).await, "admin_role");

    // An empty block stops the listener; sessions still continue until they end.
    let mut off = agent_config(proxy_block("127.0.0.1:0", &[]));
    off.postgres = None;
    let off = iron_agent::config::load_str(&off.to_yaml(), &|_| None).unwrap();
    proxy.reconfigure(&off).await.unwrap();
    assert_eq!(proxy.local_addr(), None);
    assert!(std::net::TcpStream::connect(moved).is_err());
    assert_eq!(who(&c1).await, "tenant_role");
    proxy.stop(Duration::from_secs(2)).await;
}

/// `client.auth: password`: the proxy asks for a cleartext password on the wire
/// (AuthenticationCleartextPassword, code 3) after refusing GSSAPI and TLS encryption with `N`,
/// psql and tokio-postgres log in with it, and a wrong password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_client_auth_after_gssenc_and_ssl_refusals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start();
    let agent = start_agent_auth(&cluster, "disable", &[], Some("password"));

    let mut s = tokio::net::TcpStream::connect(agent.addr("postgres"))
        .await
        .unwrap();
    // GSSENCRequest, then SSLRequest: each answered by a single `N`.
    for code in [80_877_104u32, 80_877_103] {
        let mut req = 8u32.to_be_bytes().to_vec();
        req.extend_from_slice(&code.to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], b'N', "request code {code}");
    }
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for kv in [("user", PROXY_USER), ("database", "appdb")] {
        for part in [kv.0, kv.1] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    s.write_all(&startup).await.unwrap();
    let (tag, payload) = read_message(&mut s).await;
    assert_eq!((tag, payload.as_slice()), (b'R', &3u32.to_be_bytes()[..]));
    let mut pw = PROXY_PASSWORD.as_bytes().to_vec();
    pw.push(0);
    let mut msg = vec![b'p'];
    msg.extend_from_slice(&((pw.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&pw);
    s.write_all(&msg).await.unwrap();
    let (tag, payload) = read_message(&mut s).await;
    assert_eq!((tag, payload.as_slice()), (b'R', &0u32.to_be_bytes()[..]));
    drop(s);

    let (code, out) = psql(
        &conninfo(&agent, "appdb"),
        PROXY_PASSWORD,
        "SELECT current_user;\n",
    );
    assert_eq!((code, out.trim()), (0, "tenant_role"), "{out}");
    let client = connect(&agent, "otherdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .unwrap();
    assert_eq!(who(&client).await, "app_login");
    let wrong = connect(&agent, "appdb", PROXY_USER, "nope").await;
    let code = wrong
        .err()
        .and_then(|e| e.as_db_error().map(|d| d.code().clone()));
    assert_eq!(code, Some(SqlState::INVALID_PASSWORD));
    agent.assert_not_logged(PROXY_PASSWORD);
    agent.assert_not_logged(UPSTREAM_PASSWORD);
}

/// A client's message: tag, length, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A raw session to `appdb` with `client.auth: password`, logged in and ready for a query.
async fn raw_login(agent: &Agent) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(agent.addr("postgres"))
        .await
        .unwrap();
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for part in ["user", PROXY_USER, "database", "appdb", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    s.write_all(&startup).await.unwrap();
    assert_eq!(read_message(&mut s).await.0, b'R');
    s.write_all(&frame(b'p', format!("{PROXY_PASSWORD}\0").as_bytes()))
        .await
        .unwrap();
    while read_message(&mut s).await.0 != b'Z' {}
    s
}

/// The backend messages up to and including ReadyForQuery.
async fn read_until_ready(s: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let m = read_message(s).await;
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

/// The value of an ErrorResponse field.
fn error_field(payload: &[u8], field: u8) -> String {
    payload
        .split(|b| *b == 0)
        .find(|f| f.first() == Some(&field))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_default()
}

/// A fastpath FunctionCall carries no SQL: `set_config` (OID 2078) with ('role', 'admin_role',
/// false) would change the role unseen. The proxy refuses every FunctionCall with an
/// ErrorResponse and ReadyForQuery; the session stays usable as the pinned role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_messages_are_refused_and_the_role_stays() {
    use tokio::io::AsyncWriteExt;
    let cluster = Cluster::start();
    let agent = start_agent_auth(&cluster, "disable", &[], Some("password"));
    let mut s = raw_login(&agent).await;
    let mut call = 2078u32.to_be_bytes().to_vec();
    call.extend_from_slice(&0u16.to_be_bytes()); // argument formats: all text
    call.extend_from_slice(&3u16.to_be_bytes());
    for arg in ["role", "admin_role", "false"] {
        call.extend_from_slice(&(arg.len() as u32).to_be_bytes());
        call.extend_from_slice(arg.as_bytes());
    }
    call.extend_from_slice(&0u16.to_be_bytes()); // result format: text
    s.write_all(&frame(b'F', &call)).await.unwrap();
    let answer = read_until_ready(&mut s).await;
    let tags: Vec<u8> = answer.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"EZ", "{answer:?}");
    assert_eq!(error_field(&answer[0].1, b'C'), "0A000");
    assert!(
        error_field(&answer[0].1, b'M').starts_with(
            "blocked by iron-proxy policy: the fastpath FunctionCall message is not supported"
        ),
        "{answer:?}"
    );
    assert_eq!(answer[1].1, b"I", "not in a failed transaction");

    s.write_all(&frame(b'Q', b"SELECT current_user\0"))
        .await
        .unwrap();
    let answer = read_until_ready(&mut s).await;
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(b"tenant_role"), "{answer:?}");
    drop(s);

    let rec = agent.audit_where(|v| v["reason"] == "function_call");
    assert_eq!(rec["action"], "reject", "{rec}");
    assert_eq!(rec["postgres"]["event"], "statement");
    assert_eq!(rec["postgres"]["sqlstate"], "0A000");
    assert!(rec["postgres"].get("statement").is_none(), "{rec}");
    let session = agent.audit_where(|v| v["postgres"]["event"] == "session");
    assert_eq!(session["postgres"]["statements_refused"], 1, "{session}");
}

/// A function created in pg_temp (TEMP is PUBLIC's by default) would run its body with the
/// session's role later: its body gets the statement policy when it is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_bodies_cannot_change_the_role() {
    let cluster = Cluster::start();
    let agent = start_agent(&cluster, "disable", &[]);
    let client = connect(&agent, "appdb", PROXY_USER, PROXY_PASSWORD)
        .await
        .unwrap();
    let refused = [
        (
            "CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql AS $$SELECT set_config('role','none',false)$$",
            "42501",
            "role is managed by the proxy",
        ),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS $$BEGIN SET ROLE admin_role; END$$",
            "42501",
            "role is managed by the proxy",
        ),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'SET ROLE admin_role'; END$$",
            "0A000",
            "EXECUTE in a plpgsql body is not supported",
        ),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE plperl AS 'return 1'",
            "0A000",
            "only in LANGUAGE sql or plpgsql",
        ),
    ];
    for (sql, state, msg) in refused {
        let err = client.batch_execute(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), state, "{sql}");
        assert!(db.message().contains(msg), "{sql}: {}", db.message());
        // Never created: calling it fails on the server (undefined function, or no temporary
        // schema yet when nothing temporary was ever created in this session).
        let err = client.query("SELECT pg_temp.f()", &[]).await.unwrap_err();
        assert!(
            [SqlState::UNDEFINED_FUNCTION, SqlState::INVALID_SCHEMA_NAME]
                .iter()
                .any(|c| err.code() == Some(c)),
            "{sql}: {err}"
        );
        assert_eq!(who(&client).await, "tenant_role");
    }
    // Bodies that keep to the policy are created and run.
    client
        .batch_execute(
            "CREATE FUNCTION pg_temp.n() RETURNS bigint LANGUAGE plpgsql AS $$DECLARE c bigint; BEGIN SELECT count(*) INTO c FROM items; RETURN c; END$$;\
             CREATE FUNCTION pg_temp.tenant() RETURNS text LANGUAGE sql AS $$SELECT current_setting('app.tenant')$$",
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT pg_temp.n(), pg_temp.tenant(), current_user::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "acme");
    assert_eq!(row.get::<_, String>(2), "tenant_role");
    drop(client);
    let refused = agent.audits_where(4, |v| v["postgres"]["event"] == "statement");
    let reasons: Vec<&str> = refused
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    for r in ["role_change", "dynamic_sql", "function_language"] {
        assert!(reasons.contains(&r), "{reasons:?}");
    }
}

/// One backend message: its tag and payload.
async fn read_message(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("a message within 10 s")
        .unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut payload = vec![0u8; len - 4];
    s.read_exact(&mut payload).await.unwrap();
    (head[0], payload)
}

async fn connect_addr(
    addr: std::net::SocketAddr,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(PROXY_USER)
        .password(password)
        .dbname("appdb")
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn who(c: &Client) -> String {
    c.query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// The example in docs/postgres.md is a valid config; breaking it gives iron-proxy's message.
#[test]
fn docs_example_passes_check_config() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/postgres.md"))
        .unwrap();
    let start = doc
        .find("# docs-example: postgres")
        .expect("marked example");
    let yaml = &doc[start..];
    let yaml = &yaml[..yaml.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(iron_agent_tests::agent::agent_bin())
            .args(["check-config", "--no-host-checks", "--config"])
            .arg(&path)
            .env("PG_PROXY_PASSWORD", "x")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check(yaml);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(": ok"), "{out}");
    // The same example without `postgres.listen`.
    let mut value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    value["postgres"]
        .as_object_mut()
        .unwrap()
        .remove("listen")
        .unwrap();
    let (code, out) = check(&serde_saphyr::to_string(&value).unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("error: postgres: listen is required"), "{out}");
}
