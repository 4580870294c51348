//! A throwaway PostgreSQL cluster for the PostgreSQL-proxy tests: Debian's server binaries,
//! `initdb` into a temp dir, run as the `postgres` system user when the tests run as root,
//! listening on one address (127.0.0.1 or a test namespace's), TLS with a certificate from a
//! test CA. Stopped and removed on drop.
//!
//! Roles and databases every test can rely on (see [`Cluster::start`]): login role
//! `app_login` (password [`UPSTREAM_PASSWORD`]) that is a member of `tenant_role` and
//! `admin_role` (both NOLOGIN); databases `appdb` and `otherdb`, owned by `app_login`; table
//! `appdb.public.items(id int, name text)` with two rows, readable by `tenant_role`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::TestCa;
use crate::config::{
    AgentConfig, Dns, Metrics, Postgres, PostgresClient, PostgresSetting, PostgresUpstream, Proxy,
    Tls,
};
use crate::netns::is_root;

/// The upstream login's password: it must never reach a client, a log line or an audit record.
pub const UPSTREAM_PASSWORD: &str = "upstream-secret-9Qz";
/// What workloads log in to the proxy with.
pub const PROXY_USER: &str = "app";
pub const PROXY_PASSWORD: &str = "proxy-pass-4k2";

/// Directory of the newest installed server (`/usr/lib/postgresql/<major>/bin`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b)
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

pub struct Cluster {
    pub addr: SocketAddr,
    /// Signs the server certificate (names `localhost`, `db.test`, the listen IP).
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
    netns: Option<String>,
}

/// Where the server listens and in which namespace it runs.
pub struct ClusterOptions {
    pub listen: std::net::IpAddr,
    pub netns: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1".parse().expect("ip"),
            netns: None,
        }
    }
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(opts: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "superuser-pw\n").expect("pwfile");
        if is_root() {
            chown_postgres(dir.path());
        }
        let port = if opts.netns.is_some() {
            5432
        } else {
            free_port()
        };
        let ca = TestCa::new("postgres test CA");
        let ip = opts.listen.to_string();
        let (cert, key) = ca.server_cert_pem(&["localhost", "db.test"]);
        let cluster = Cluster {
            addr: SocketAddr::new(opts.listen, port),
            ca,
            dir,
            netns: opts.netns,
        };
        cluster.must(
            &bin("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--auth-local=trust",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        std::fs::write(data.join("server.crt"), cert).expect("cert");
        std::fs::write(data.join("server.key"), key).expect("key");
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod key");
        if is_root() {
            chown_postgres(&data);
        }
        let conf = format!(
            "listen_addresses = '{ip}'\nport = {port}\nunix_socket_directories = '{sock}'\n\
             ssl = on\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 100\nshared_buffers = 32MB\nlog_min_messages = warning\n",
            sock = cluster.dir.path().display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n",
        )
        .expect("hba");
        let log = cluster.dir.path().join("server.log");
        cluster.must(
            &bin("pg_ctl"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        cluster.superuser_sql("postgres", &setup_sql());
        cluster.superuser_sql("appdb", APPDB_SQL);
        cluster
    }

    /// Runs a program as the cluster's owner (inside the namespace, if any).
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if is_root() {
            argv.extend(
                [
                    "setpriv",
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ]
                .map(String::from),
            );
        }
        argv.push(program.to_string_lossy().into_owned());
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .current_dir(self.dir.path())
            .env("LC_ALL", "C");
        c
    }

    fn must(&self, program: &Path, args: &[&str]) -> Output {
        let out = self
            .command(program, args)
            .output()
            .expect("run postgres tool");
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs SQL as the superuser over the unix socket; returns psql's unaligned output.
    pub fn superuser_sql(&self, db: &str, sql: &str) -> String {
        let sock = self.dir.path().to_string_lossy().into_owned();
        let port = self.addr.port().to_string();
        let mut args = vec![
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &sock,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
        ];
        // One `-c` per statement: CREATE DATABASE cannot share a transaction.
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            args.extend(["-c", stmt]);
        }
        let out = self.must(&bin("psql"), &args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The CA certificate file (readable by anyone).
    pub fn ca_file(&self) -> PathBuf {
        let p = self.dir.path().join("ca.pem");
        if !p.exists() {
            std::fs::write(&p, &self.ca.cert_pem).expect("write CA");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        p
    }

    /// A URL DSN for `db` as `app_login` at `host` (default: the listen address).
    pub fn dsn(&self, host: Option<&str>, db: &str, sslmode: &str) -> String {
        let host = host.map_or_else(|| self.addr.ip().to_string(), str::to_string);
        format!(
            "postgres://app_login:{UPSTREAM_PASSWORD}@{host}:{}/{db}?sslmode={sslmode}",
            self.addr.port()
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command(
                &bin("pg_ctl"),
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .output();
    }
}

fn setup_sql() -> String {
    format!(
        "CREATE ROLE app_login LOGIN PASSWORD '{UPSTREAM_PASSWORD}';\
         CREATE ROLE tenant_role NOLOGIN; CREATE ROLE admin_role NOLOGIN;\
         GRANT tenant_role TO app_login; GRANT admin_role TO app_login;\
         CREATE DATABASE appdb OWNER app_login; CREATE DATABASE otherdb OWNER app_login;"
    )
}

const APPDB_SQL: &str = "CREATE TABLE items(id int, name text); INSERT INTO items VALUES (1,'one'),(2,'two');\
     GRANT SELECT, INSERT ON items TO tenant_role; CREATE TABLE secrets(v text); INSERT INTO secrets VALUES ('admin only');\
     GRANT SELECT ON secrets TO admin_role;";

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

fn chown_postgres(path: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .expect("chown");
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `psql` (Debian's client) against `host:port` with `conninfo` extras, feeding `script`
/// on stdin; returns (exit code, stdout + stderr). Bounded in time.
pub fn psql(conninfo: &str, password: &str, script: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("20")
        .arg(bin("psql"))
        .args(["-X", "-A", "-t", "-v", "VERBOSITY=verbose", conninfo])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn psql");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("psql");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits (bounded) until `addr` accepts TCP connections.
pub fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A route of [`proxy_block`]: database, pinned role, pinned settings `(name, value)`.
pub type Route<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

/// The agent config's `postgres:` block with one upstream per route; the proxy credential is
/// [`PROXY_USER`] with the password in `PG_PROXY_PASSWORD`, DSNs come from env vars
/// `PG_DSN_<DATABASE>`.
pub fn proxy_block(listen: &str, routes: &[Route]) -> Postgres {
    Postgres {
        listen: listen.into(),
        tls: false,
        client: PostgresClient {
            user: PROXY_USER.into(),
            password_env: "PG_PROXY_PASSWORD".into(),
            auth: None,
        },
        upstreams: routes
            .iter()
            .map(|(db, role, settings)| PostgresUpstream {
                database: db.to_string(),
                dsn: json!({"type": "env", "var": format!("PG_DSN_{}", db.to_ascii_uppercase())}),
                role: role.map(str::to_string),
                settings: settings
                    .iter()
                    .map(|(name, value)| PostgresSetting {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// An agent that runs only `block`: DNS off, sni-only (no CA needed), every listener on a free
/// loopback port, no transforms.
pub fn agent_config(block: Postgres) -> AgentConfig {
    AgentConfig {
        dns: Dns {
            enabled: Some(false),
            ..Dns::default()
        },
        proxy: Proxy::any_port(),
        tls: Tls {
            mode: Some("sni-only".into()),
            ..Tls::default()
        },
        metrics: Some(Metrics::any_port()),
        transforms: Vec::new(),
        intercept: None,
        log: None,
        postgres: Some(block),
        mcp: None,
        mcp_gateway: None,
    }
}
