//! `cargo xtask bench --control`: iron-control's `POST /api/v1/proxy/sync` under load, on
//! SQLite and on PostgreSQL (a throwaway cluster), with a fleet of 1,000 proxies and 10,000
//! grants, against a 10-proxy / 100-grant baseline measured in the same run: if sync scanned
//! instead of using indexes, the large fleet would be far slower than the baseline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::control_load::{Conn, LoadResult, parallel, sync_load};
use crate::children::Guard;
use crate::cmd::{cargo, run_streamed, succeeds};

const CONNS: usize = 16;
const SEED_THREADS: usize = 8;
const KEY: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";

pub struct Options<'a> {
    pub root: &'a Path,
    pub target: &'a Path,
    pub workdir: &'a Path,
    pub duration: Duration,
    pub warmup: Duration,
    pub no_build: bool,
}

struct Fleet {
    proxies: usize,
    grants_per_proxy: usize,
}

struct Row {
    backend: &'static str,
    fleet: String,
    mode: &'static str,
    result: LoadResult,
}

pub fn run(o: &Options<'_>) -> Result<()> {
    if !o.no_build {
        run_streamed(cargo().current_dir(o.root).args([
            "build",
            "--release",
            "-p",
            "iron-control",
            "--bin",
            "iron-control",
        ]))?;
    }
    let bin = o.target.join("release").join("iron-control");
    if !bin.is_file() {
        bail!("{} is missing", bin.display());
    }
    let fleets = [
        Fleet {
            proxies: 10,
            grants_per_proxy: 10,
        },
        Fleet {
            proxies: 1000,
            grants_per_proxy: 10,
        },
    ];
    let mut rows = Vec::new();
    for (i, f) in fleets.iter().enumerate() {
        let url = format!(
            "sqlite://{}",
            o.workdir.join(format!("bench-{i}.db")).display()
        );
        rows.extend(measure(o, &bin, "sqlite", &url, f, &format!("sqlite-{i}"))?);
    }
    let pg = PgCluster::start(o.workdir)?;
    for (i, f) in fleets.iter().enumerate() {
        let url = pg.create_db(&format!("bench{i}"))?;
        rows.extend(measure(o, &bin, "postgres", &url, f, &format!("pg-{i}"))?);
    }
    drop(pg);
    report(o, &rows)
}

fn measure(
    o: &Options<'_>,
    bin: &Path,
    backend: &'static str,
    url: &str,
    fleet: &Fleet,
    tag: &str,
) -> Result<Vec<Row>> {
    let label = format!(
        "{} proxies / {} grants",
        fleet.proxies,
        fleet.proxies * fleet.grants_per_proxy
    );
    eprintln!("==> iron-control on {backend}: seeding {label}");
    let mut cmd = if succeeds(Command::new("taskset").arg("--version")) {
        let mut c = Command::new("taskset");
        c.args(["-c", super::servers::CPU_PROXY]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        url,
        "--state-dir",
    ])
    .arg(o.workdir.join(format!("state-{tag}")))
    .env("IRON_CONTROL_SECRET_KEY", KEY)
    .env("IRON_CONTROL_DB_CONNECTIONS", "16");
    let mut guard = Guard::spawn("iron-control", cmd)?;
    let (addr, key) = startup(&mut guard)?;
    let t = Instant::now();
    let tokens = seed(addr, &key, fleet)?;
    eprintln!("==> seeded in {:.1} s", t.elapsed().as_secs_f64());
    let hashes: Vec<String> = parallel(addr, tokens.len(), SEED_THREADS, |c, i| {
        let v = c.call("POST", "/api/v1/proxy/sync", &tokens[i], &json!({}), 200)?;
        let n = v["secrets"].as_array().map_or(0, Vec::len);
        if n != fleet.grants_per_proxy {
            bail!(
                "proxy {i} received {n} secrets, expected {}",
                fleet.grants_per_proxy
            );
        }
        Ok(v["config_hash"].as_str().unwrap_or_default().to_owned())
    })?;
    let mut rows = Vec::new();
    for (mode, h) in [
        ("full config", None),
        ("hash match", Some(hashes.as_slice())),
    ] {
        sync_load(addr, &tokens, h, CONNS, o.warmup)?;
        eprintln!("==> {backend}, {label}: sync ({mode}), {CONNS} connections");
        let result = sync_load(addr, &tokens, h, CONNS, o.duration)?;
        if result.errors > 0 || result.requests == 0 {
            bail!(
                "{backend} sync load: {} errors, {} ok; server log:\n{}",
                result.errors,
                result.requests,
                guard.stderr_tail.text()
            );
        }
        rows.push(Row {
            backend,
            fleet: label.clone(),
            mode,
            result,
        });
    }
    guard.stop();
    Ok(rows)
}

/// Waits for the `listening` and `bootstrap api key` lines.
fn startup(guard: &mut Guard) -> Result<(SocketAddr, String)> {
    let rx = guard.stderr_lines.take().context("stderr taken")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut addr, mut key) = (None, None);
    while addr.is_none() || key.is_none() {
        if Instant::now() > deadline {
            bail!("iron-control did not start:\n{}", guard.stderr_tail.text());
        }
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            if let Some(st) = guard.exited() {
                bail!("iron-control exited ({st}):\n{}", guard.stderr_tail.text());
            }
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["msg"] == "listening" {
            addr = v["addr"].as_str().and_then(|a| a.parse().ok());
        }
        if v["msg"] == "bootstrap api key" {
            key = v["api_key"].as_str().map(str::to_owned);
        }
    }
    guard.stderr_lines = Some(rx);
    Ok((addr.context("addr")?, key.context("key")?))
}

/// One principal and one control_plane static secret per proxy; each principal is granted
/// `grants_per_proxy` of the secrets. Returns the proxy tokens.
fn seed(addr: SocketAddr, key: &str, f: &Fleet) -> Result<Vec<String>> {
    let n = f.proxies;
    let id = |v: Value| v["data"]["id"].as_str().unwrap_or_default().to_owned();
    let principals = parallel(addr, n, SEED_THREADS, |c, i| {
        let b = json!({"data": {"foreign_id": format!("p{i}")}});
        Ok(id(c.call("POST", "/api/v1/principals", key, &b, 201)?))
    })?;
    let secrets = parallel(addr, n, SEED_THREADS, |c, i| {
        let b = json!({"data": {
            "foreign_id": format!("s{i}"),
            "inject_config": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
            "source": {"source_type": "control_plane", "secret": format!("bench-secret-{i}"), "config": {}},
            "rules": [{"host": format!("api{i}.example.com"), "http_methods": ["GET", "POST"]}]
        }});
        Ok(id(c.call(
            "POST",
            "/api/v1/static_secrets",
            key,
            &b,
            201,
        )?))
    })?;
    let g = f.grants_per_proxy;
    parallel(addr, n * g, SEED_THREADS, |c, j| {
        let (p, k) = (j / g, j % g);
        let s = &secrets[(p + k * 97) % n];
        let b = json!({"data": {"principal_id": principals[p], "static_secret_id": s}});
        c.call("POST", "/api/v1/grants", key, &b, 201).map(|_| ())
    })?;
    parallel(addr, n, SEED_THREADS, |c: &mut Conn, i| {
        let b = json!({"data": {"name": format!("proxy-{i}"), "principal_id": principals[i]}});
        let v = c.call("POST", "/api/v1/proxies", key, &b, 201)?;
        Ok(v["data"]["token"].as_str().unwrap_or_default().to_owned())
    })
}

fn report(o: &Options<'_>, rows: &[Row]) -> Result<()> {
    println!();
    println!(
        "iron-control POST /api/v1/proxy/sync, {CONNS} keep-alive connections, {:.0} s per run (server on CPU 0)",
        o.duration.as_secs_f64()
    );
    println!(
        "{:<9} {:<28} {:<12} {:>10} {:>9} {:>9}",
        "backend", "fleet", "mode", "req/s", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:<9} {:<28} {:<12} {:>10.0} {:>9.2} {:>9.2}",
            r.backend, r.fleet, r.mode, r.result.rps, r.result.p50_ms, r.result.p99_ms
        );
    }
    // Large fleet vs baseline, same backend and mode: near 1.0 means sync cost does not grow
    // with the fleet.
    println!();
    for backend in ["sqlite", "postgres"] {
        for mode in ["full config", "hash match"] {
            let pick = |big: bool| {
                rows.iter()
                    .filter(|r| r.backend == backend && r.mode == mode)
                    .nth(usize::from(big))
            };
            if let (Some(small), Some(big)) = (pick(false), pick(true)) {
                println!(
                    "{backend:<9} {mode:<12} 1,000-proxy fleet / baseline: {:.2}x req/s, {:.2}x p99",
                    big.result.rps / small.result.rps,
                    big.result.p99_ms / small.result.p99_ms.max(0.001)
                );
            }
        }
    }
    println!("A fleet of 1,000 proxies polling every 10 s needs 100 req/s.");
    let out = o.root.join("bench-results");
    std::fs::create_dir_all(&out)?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"backend": r.backend, "fleet": r.fleet, "mode": r.mode,
                   "requests": r.result.requests, "seconds": r.result.seconds,
                   "rps": r.result.rps, "p50_ms": r.result.p50_ms, "p99_ms": r.result.p99_ms})
        })
        .collect();
    let path = out.join("control.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({"connections": CONNS, "runs": json_rows}))?,
    )?;
    eprintln!("raw numbers: {}", path.display());
    Ok(())
}

/// A throwaway PostgreSQL cluster under `dir` on a free 127.0.0.1 port, run as the `postgres`
/// system user when we are root; stopped on drop.
struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

fn as_owner(prog: &Path) -> Command {
    if super::intercept::is_root() {
        let mut c = Command::new(runuser());
        c.args(["-u", "postgres", "--"]).arg(prog).current_dir("/");
        c
    } else {
        Command::new(prog)
    }
}

impl PgCluster {
    fn start(dir: &Path) -> Result<Self> {
        let bin = pg_bin()?;
        let base = dir.join("pg");
        std::fs::create_dir_all(&base)?;
        if super::intercept::is_root() {
            run_quiet(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&base),
            )?;
        }
        let data = base.join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        run_quiet(
            as_owner(&bin.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        )?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            data.display()
        );
        let c = PgCluster { bin, data, port };
        run_quiet(
            as_owner(&c.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-D"])
                .arg(&c.data)
                .arg("-l")
                .arg(c.data.join("log"))
                .args(["-o", &opts, "start"]),
        )?;
        Ok(c)
    }

    fn create_db(&self, name: &str) -> Result<String> {
        run_quiet(as_owner(&self.bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            name,
        ]))?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_owner(&self.bin.join("pg_ctl"))
            .args(["-w", "-m", "fast", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let what = crate::cmd::describe(cmd);
    let out = cmd.output().with_context(|| format!("running `{what}`"))?;
    if !out.status.success() {
        bail!("`{what}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The newest `/usr/lib/postgresql/N/bin` with an initdb (Debian's layout).
fn pg_bin() -> Result<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed: run `cargo xtask setup`")?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    v.sort();
    v.pop()
        .map(|(_, p)| p)
        .context("no initdb under /usr/lib/postgresql")
}

/// `runuser` from util-linux (in /usr/sbin, which a non-login PATH may lack).
fn runuser() -> &'static str {
    ["/usr/sbin/runuser", "/sbin/runuser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("runuser")
}
