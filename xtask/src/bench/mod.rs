//! `cargo xtask bench`: the agent against a direct connection and a plain TCP relay, then (as
//! root) the eBPF redirect against an iptables REDIRECT rule.
//!
//! Layout: `servers` builds and starts the processes, `oha` drives load, `procfs` samples CPU
//! and memory, `report` prints the table and writes bench-results/latest.json; `intercept` is the
//! eBPF-vs-iptables bench (bench-results/intercept.json); `control` is iron-control's sync bench
//! (`--control`, bench-results/control.json).

mod audit;
mod audit_micro;
mod control;
mod control_load;
mod intercept;
mod oha;
mod postgres;
mod procfs;
mod report;
mod servers;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cmd::{self, succeeds};
use oha::{Load, LoadResult};
use servers::CPU_PROXY;

pub const MIB: f64 = 1024.0 * 1024.0;
const SMALL_CONNS: u32 = 16;
const LARGE_CONNS: u32 = 64;
/// Concurrency for the new-connection-per-request and 1 MiB runs.
const OTHER_CONNS: u32 = 16;

#[derive(Args)]
pub struct BenchArgs {
    /// Short runs for development (about a minute in all).
    #[arg(long)]
    quick: bool,
    /// Seconds per measured run (default 10, or 3 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Only the interception bench: eBPF redirect vs iptables REDIRECT vs direct (root).
    #[arg(long)]
    intercept: bool,
    /// Only the control-plane bench: iron-control sync requests/s and p99 with 1,000 proxies
    /// and 10,000 grants, on SQLite and PostgreSQL.
    #[arg(long, conflicts_with = "intercept")]
    control: bool,
    /// Skip the interception bench even as root (it needs a network namespace and a test user,
    /// which collide with other work on a shared machine).
    #[arg(long, conflicts_with = "intercept")]
    no_intercept: bool,
    /// Measure this agent binary instead of the fresh release build (A/B a saved build).
    #[arg(long, value_name = "PATH")]
    agent_bin: Option<std::path::PathBuf>,
    /// Use the release binaries already in the target directory instead of building them.
    #[arg(long)]
    no_build: bool,
    /// Only the PostgreSQL proxy bench: pgbench simple-query round trips, proxy vs direct.
    #[arg(long, conflicts_with = "intercept")]
    postgres: bool,
    /// Only the audit record alone: time per record, and instructions and allocations per
    /// record under valgrind (bench-results/audit-micro.json).
    #[arg(long, conflicts_with_all = ["intercept", "control", "postgres"])]
    audit_micro: bool,
}

/// One measured run, with the CPU the relay or agent spent during it.
#[derive(Clone, Debug)]
pub struct Measured {
    pub load: LoadResult,
    pub cpu_us: Option<u64>,
}

impl Measured {
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.cpu_us? as f64;
        (self.load.ok > 0).then(|| cpu / self.load.ok as f64)
    }

    pub fn cpu_us_per_mib(&self) -> Option<f64> {
        let cpu = self.cpu_us? as f64;
        (self.load.bytes > 0).then(|| cpu / (self.load.bytes as f64 / MIB))
    }
}

#[derive(Clone, Debug)]
pub struct HopResults {
    pub keepalive_16: Measured,
    pub keepalive_64: Measured,
    pub new_conn: Measured,
    pub mib: Measured,
    /// VmHWM right after the 64-connection run (peak over the process's whole life).
    pub peak_rss_kib: Option<u64>,
}

/// How the client reaches the origin: directly, via the relay, or via the agent.
struct Hop<'a> {
    name: &'static str,
    /// TCP destination, when it is not the origin itself.
    via: std::net::SocketAddr,
    ca_cert: &'a Path,
    /// The process whose CPU and memory we sample.
    pid: Option<u32>,
}

struct Ctx<'a> {
    oha: &'a Path,
    origin_port: u16,
    duration: Duration,
    warmup: Duration,
    ticks: u64,
}

impl Ctx<'_> {
    fn load<'b>(
        &'b self,
        hop: &'b Hop<'b>,
        url: &'b str,
        connections: u32,
        keepalive: bool,
        d: Duration,
    ) -> Load<'b> {
        Load {
            oha: self.oha,
            url,
            // Direct runs go through --connect-to as well (to 127.0.0.1) so every hop uses the
            // same address family whatever "localhost" resolves to first.
            connect_to: Some(format!(
                "localhost:{}:{}:{}",
                self.origin_port,
                hop.via.ip(),
                hop.via.port()
            )),
            ca_cert: hop.ca_cert,
            connections,
            duration: d,
            keepalive,
            cpu: CPU_PROXY,
        }
    }

    fn measure(
        &self,
        hop: &Hop<'_>,
        url: &str,
        connections: u32,
        keepalive: bool,
    ) -> Result<Measured> {
        let before = hop.pid.map(|p| procfs::cpu_us(p, self.ticks)).transpose()?;
        let load = self
            .load(hop, url, connections, keepalive, self.duration)
            .run()?;
        let after = hop.pid.map(|p| procfs::cpu_us(p, self.ticks)).transpose()?;
        if load.ok == 0 {
            bail!(
                "no successful requests to {url} via {} ({})",
                hop.name,
                if load.failure_kinds.is_empty() {
                    "no responses".to_owned()
                } else {
                    load.failure_kinds.join(", ")
                }
            );
        }
        let cpu_us = match (before, after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        Ok(Measured { load, cpu_us })
    }

    fn run_hop(&self, hop: &Hop<'_>) -> Result<HopResults> {
        let small = format!("https://localhost:{}/small", self.origin_port);
        let large = format!("https://localhost:{}/1mib", self.origin_port);
        eprintln!("==> {}: warm-up", hop.name);
        // Warm-up: connection pools, the agent's leaf cache, page faults. Its numbers are discarded.
        let warm = self
            .load(hop, &small, SMALL_CONNS, true, self.warmup)
            .run()?;
        if warm.ok == 0 {
            bail!(
                "warm-up via {} got no successful responses: {}",
                hop.name,
                warm.failure_kinds.join(", ")
            );
        }
        eprintln!("==> {}: keep-alive, {SMALL_CONNS} connections", hop.name);
        let keepalive_16 = self.measure(hop, &small, SMALL_CONNS, true)?;
        eprintln!("==> {}: keep-alive, {LARGE_CONNS} connections", hop.name);
        let keepalive_64 = self.measure(hop, &small, LARGE_CONNS, true)?;
        let peak_rss_kib = hop.pid.map(procfs::peak_rss_kib).transpose()?;
        eprintln!(
            "==> {}: new TLS connection per request, {OTHER_CONNS} connections",
            hop.name
        );
        let new_conn = self.measure(hop, &small, OTHER_CONNS, false)?;
        eprintln!(
            "==> {}: 1 MiB downloads, {OTHER_CONNS} connections",
            hop.name
        );
        let mib = self.measure(hop, &large, OTHER_CONNS, true)?;
        Ok(HopResults {
            keepalive_16,
            keepalive_64,
            new_conn,
            mib,
            peak_rss_kib,
        })
    }
}

/// Scratch directory for CAs and the agent config, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("iron-agent-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::children::remove_on_interrupt(dir.clone());
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_machine() -> Result<()> {
    if !succeeds(Command::new("taskset").arg("--version")) {
        bail!("`taskset` (util-linux) is required to pin processes to CPUs; install util-linux");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!(
            "the benchmark pins the proxy to CPU 0 and the origin to CPU 1, but only {cpus} CPU is available"
        );
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    check_machine()?;
    let secs = args.duration.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    if !(secs.is_finite() && (0.5..=600.0).contains(&secs)) {
        bail!("--duration must be between 0.5 and 600 seconds");
    }
    let duration = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs_f64(if args.quick { 0.5 } else { 1.0 });

    let root = cmd::workspace_root()?;
    let target = cmd::target_dir(&root);
    if args.control {
        let work = WorkDir::new()?;
        return control::run(&control::Options {
            root: &root,
            target: &target,
            workdir: &work.0,
            duration,
            warmup,
            no_build: args.no_build,
        });
    }
    let mut bins = if args.no_build {
        servers::release_bins(&target)
    } else {
        servers::build_release(&root, &target)?
    };
    if let Some(agent) = &args.agent_bin {
        bins.agent = agent.clone();
    }
    if args.postgres {
        let work = WorkDir::new()?;
        return postgres::run(&root, &bins.agent, &work.0, secs);
    }
    if args.audit_micro {
        let work = WorkDir::new()?;
        return audit_micro::run_alone(&bins.agent, &work.0, &root.join("bench-results"));
    }
    let oha = oha::ensure_installed()?;
    let work = WorkDir::new()?;
    let intercept = intercept::Setup {
        root: &root,
        bins: &bins,
        oha: &oha,
        workdir: &work.0,
        duration,
        warmup,
    };
    if args.intercept {
        return intercept::run(&intercept);
    }

    let mut origin = servers::start_origin(&bins.origin, &work.0)?;
    let relay = servers::start_relay(&bins.relay, origin.addr)?;
    // An agent that does not start must not cost us the direct and relay numbers.
    let agent = servers::start_agent(&bins.agent, &work.0, &origin.ca_cert, servers::Audit::Off);
    if let Err(e) = &agent {
        eprintln!("==> agent did not start: {e:#}");
    }

    let ctx = Ctx {
        oha: &oha,
        origin_port: origin.addr.port(),
        duration,
        warmup,
        ticks: procfs::clock_ticks_per_sec(),
    };
    let direct = Hop {
        name: "direct",
        via: origin.addr,
        ca_cert: &origin.ca_cert,
        pid: None,
    };
    let via_relay = Hop {
        name: "relay",
        via: relay.addr,
        ca_cert: &origin.ca_cert,
        pid: Some(relay.guard.pid()),
    };

    let loadavg_before = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let direct_res = ctx.run_hop(&direct).map_err(|e| format!("{e:#}"));
    let relay_res = ctx.run_hop(&via_relay).map_err(|e| format!("{e:#}"));
    let agent_res = match &agent {
        Ok(a) => {
            let hop = Hop {
                name: "agent",
                via: a.https,
                ca_cert: &a.ca_cert,
                pid: Some(a.guard.pid()),
            };
            ctx.run_hop(&hop).map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("agent did not start: {e:#}")),
    };
    let audit_res = match &agent {
        Ok(a) => {
            audit::run(&ctx, a, &bins.agent, &work.0, &origin.ca_cert).map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("agent did not start: {e:#}")),
    };
    // A crashed origin would make every later number meaningless; say so rather than report them.
    if let Some(status) = origin.guard.exited() {
        bail!(
            "bench-origin exited during the run ({status}); stderr:\n{}",
            origin.guard.stderr_tail.text()
        );
    }
    eprintln!("==> leaf mint (iron-agent bench-mint)");
    let mint = servers::leaf_mint_us(&bins.agent);

    let report = report::Report {
        run_seconds: secs,
        warmup_seconds: warmup.as_secs_f64(),
        small_conns: SMALL_CONNS,
        large_conns: LARGE_CONNS,
        other_conns: OTHER_CONNS,
        direct: direct_res,
        relay: relay_res,
        agent: agent_res,
        leaf_mint_us: mint,
        audit: audit_res,
        loadavg_before,
    };
    report.print();
    let out = root.join("bench-results");
    report.write_json(&out)?;
    eprintln!("raw numbers: {}", out.join("latest.json").display());
    drop((agent, relay, origin));
    let intercept_res = if args.no_intercept {
        eprintln!("==> skipping the interception bench (--no-intercept)");
        Ok(())
    } else if intercept::is_root() {
        intercept::run(&intercept)
    } else {
        eprintln!(
            "==> skipping the interception bench: {}",
            intercept::NOT_ROOT
        );
        Ok(())
    };

    let failed: Vec<&str> = [
        ("direct", &report.direct),
        ("relay", &report.relay),
        ("agent", &report.agent),
    ]
    .into_iter()
    .filter(|(_, r)| r.is_err())
    .map(|(n, _)| n)
    .chain(report.audit.is_err().then_some("audit pair"))
    .collect();
    if !failed.is_empty() {
        bail!("scenario(s) failed: {} (see above)", failed.join(", "));
    }
    intercept_res
}
