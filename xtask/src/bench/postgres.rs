//! `cargo xtask bench --postgres`: pgbench's select-only script over the simple query protocol
//! (one round trip per statement), at 16 clients, through the agent's PostgreSQL proxy against
//! the same server directly. A throwaway cluster (Debian's server binaries, `initdb` into the
//! work directory, run as `postgres` when we are root) serves both. Target: proxy ≥ 0.7× direct.
//! Writes bench-results/postgres.json.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::children::Guard;

const CLIENTS: u32 = 16;
const TARGET_RATIO: f64 = 0.7;
const UPSTREAM_PASSWORD: &str = "bench-upstream-pw";
const PROXY_PASSWORD: &str = "bench-proxy-pw";

fn pg_bin(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found (run `cargo xtask setup`)")?
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_string_lossy().parse().ok()?,
                e.path().join("bin"),
            ))
        })
        .collect();
    dirs.sort();
    let (_, dir) = dirs.pop().context("no /usr/lib/postgresql/<version>")?;
    Ok(dir.join(name))
}

fn is_root() -> bool {
    crate::setup::is_root()
}

/// A command run as the cluster owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(work: &Path) -> Result<Self> {
        let dir = work.join("pg");
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("pw"), "bench-superuser\n")?;
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(work);
                    c
                },
                "chown",
            )?;
        }
        let mut init = as_owner(&pg_bin("initdb")?);
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        init.arg(format!("--pwfile={}", dir.join("pw").display()));
        run_ok(init, "initdb")?;
        let [port, _, _] = super::servers::free_ports()?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nmax_connections = 100\nshared_buffers = 64MB\n",
            dir.display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        let mut start = as_owner(&pg_bin("pg_ctl")?);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-t", "30", "start"]);
        run_ok(start, "pg_ctl start")?;
        let c = Cluster { dir, port };
        // One statement per psql call: CREATE DATABASE cannot run inside the transaction a
        // multi-statement `-c` runs in.
        c.sql(&format!(
            "CREATE ROLE bench LOGIN PASSWORD '{UPSTREAM_PASSWORD}'"
        ))?;
        c.sql("CREATE DATABASE benchdb OWNER bench")?;
        let mut init = as_owner(&pg_bin("pgbench")?);
        init.args(["-i", "-s", "1", "-q", "-h"]).arg(&c.dir).args([
            "-p",
            &port.to_string(),
            "-U",
            "bench",
            "benchdb",
        ]);
        run_ok(init, "pgbench -i")?;
        Ok(c)
    }

    fn sql(&self, sql: &str) -> Result<String> {
        let mut c = as_owner(&pg_bin("psql")?);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir);
        c.args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ]);
        run_ok(c, "psql")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(pg_ctl) = pg_bin("pg_ctl") {
            let mut stop = as_owner(&pg_ctl);
            stop.arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = stop.output();
        }
    }
}

/// tps of `pgbench -S -M simple` against `addr` as `user`.
fn pgbench(addr: SocketAddr, user: &str, password: &str, secs: u64) -> Result<f64> {
    let mut c = Command::new(pg_bin("pgbench")?);
    c.args([
        "-n",
        "-S",
        "-M",
        "simple",
        "-c",
        &CLIENTS.to_string(),
        "-j",
        "2",
    ])
    .args([
        "-T",
        &secs.to_string(),
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
    ])
    .args(["-U", user, "benchdb"])
    .env("PGPASSWORD", password)
    .env("PGSSLMODE", "disable");
    let out = run_ok(c, "pgbench")?;
    out.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("no tps in pgbench output:\n{out}"))
}

fn start_agent(bin: &Path, work: &Path, upstream: u16) -> Result<(Guard, SocketAddr)> {
    let [http, https, listen] = super::servers::free_ports()?;
    let [metrics, _, _] = super::servers::free_ports()?;
    let config = format!(
        "dns:\n  enabled: false\nproxy:\n  http_listen: \"127.0.0.1:{http}\"\n  https_listen: \"127.0.0.1:{https}\"\n\
         tls:\n  mode: sni-only\nmetrics:\n  listen: \"127.0.0.1:{metrics}\"\nlog:\n  level: warn\n\
         postgres:\n  listen: \"127.0.0.1:{listen}\"\n  client: {{user: app, password_env: PG_PROXY_PASSWORD}}\n\
         \x20 upstreams:\n    - database: benchdb\n      dsn: {{type: env, var: PG_DSN}}\n\
         \x20     settings: [{{name: app.tenant, value: bench}}]\n"
    );
    let path = work.join("pg-agent.yaml");
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&path)
        .env("PG_PROXY_PASSWORD", PROXY_PASSWORD)
        .env(
            "PG_DSN",
            format!(
                "postgres://bench:{UPSTREAM_PASSWORD}@127.0.0.1:{upstream}/benchdb?sslmode=disable"
            ),
        );
    let mut guard = Guard::spawn("iron-agent (postgres)", cmd)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        if let Some(st) = guard.exited() {
            bail!("the agent exited ({st}): {}", guard.stderr_tail.text());
        }
        if Instant::now() > deadline {
            bail!(
                "the agent's postgres listener did not open: {}",
                guard.stderr_tail.text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((guard, addr))
}

pub fn run(root: &Path, agent_bin: &Path, work: &Path, secs: f64) -> Result<()> {
    let secs = secs.ceil().max(1.0) as u64;
    eprintln!("==> postgres: starting a throwaway cluster");
    let cluster = Cluster::start(work)?;
    let direct_addr = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let (agent, proxy_addr) = start_agent(agent_bin, work, cluster.port)?;
    eprintln!("==> postgres: warm-up");
    pgbench(direct_addr, "bench", UPSTREAM_PASSWORD, 1)?;
    pgbench(proxy_addr, "app", PROXY_PASSWORD, 1)?;
    eprintln!("==> postgres: direct, {CLIENTS} clients, {secs}s");
    let direct = pgbench(direct_addr, "bench", UPSTREAM_PASSWORD, secs)?;
    eprintln!("==> postgres: through the proxy, {CLIENTS} clients, {secs}s");
    let proxied = pgbench(proxy_addr, "app", PROXY_PASSWORD, secs)?;
    drop(agent);
    drop(cluster);
    let ratio = proxied / direct;
    println!();
    println!(
        "PostgreSQL simple-query round trips (pgbench -S -M simple, {CLIENTS} clients, {secs}s each)"
    );
    println!("| path | tps | vs direct |");
    println!("|---|---|---|");
    println!("| direct | {direct:.0} | 1.00 |");
    println!(
        "| iron-agent postgres proxy | {proxied:.0} | {ratio:.2} (target >= {TARGET_RATIO}) |"
    );
    let out = root.join("bench-results");
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({
        "clients": CLIENTS, "seconds": secs, "direct_tps": direct, "proxy_tps": proxied,
        "ratio": ratio, "target_ratio": TARGET_RATIO,
    });
    std::fs::write(
        out.join("postgres.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    if ratio < TARGET_RATIO {
        eprintln!("==> postgres: below target ({ratio:.2} < {TARGET_RATIO})");
    }
    Ok(())
}
