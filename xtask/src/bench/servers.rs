//! Building and starting the origin, the relay and the agent.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    children::Guard,
    cmd::{cargo, run_streamed},
};

pub const CPU_PROXY: &str = "0";
pub const CPU_ORIGIN: &str = "1";
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Bins {
    pub agent: PathBuf,
    pub origin: PathBuf,
    pub relay: PathBuf,
}

pub fn build_release(root: &Path, target: &Path) -> Result<Bins> {
    run_streamed(cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "iron-agent",
        "--bin",
        "iron-agent",
        "-p",
        "iron-agent-tests",
        "--bin",
        "bench-origin",
        "--bin",
        "bench-relay",
    ]))?;
    Ok(release_bins(target))
}

/// Where `build_release` puts the binaries.
pub fn release_bins(target: &Path) -> Bins {
    let dir = target.join("release");
    Bins {
        agent: dir.join("iron-agent"),
        origin: dir.join("bench-origin"),
        relay: dir.join("bench-relay"),
    }
}

fn pinned(cpu: &str, bin: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu]).arg(bin);
    cmd
}

/// `{"addr": "..."}` line printed by bench-origin and bench-relay once they accept.
fn announced_addr(guard: &mut Guard) -> Result<(SocketAddr, Value)> {
    let line = guard.first_stdout_line(START_TIMEOUT)?;
    let v: Value = serde_json::from_str(&line)
        .with_context(|| format!("{} printed {line:?}", guard.name()))?;
    let addr = v
        .get("addr")
        .and_then(Value::as_str)
        .context("no addr in announcement")?
        .parse()
        .context("bad addr in announcement")?;
    Ok((addr, v))
}

pub struct Origin {
    pub guard: Guard,
    pub addr: SocketAddr,
    pub ca_cert: PathBuf,
}

pub fn start_origin(bin: &Path, workdir: &Path) -> Result<Origin> {
    let mut cmd = pinned(CPU_ORIGIN, bin);
    cmd.arg("--ca-dir").arg(workdir);
    let mut guard = Guard::spawn("bench-origin", cmd)?;
    let (addr, v) = announced_addr(&mut guard)?;
    let ca_cert = PathBuf::from(
        v.get("ca")
            .and_then(Value::as_str)
            .context("origin did not say where its CA is")?,
    );
    Ok(Origin {
        guard,
        addr,
        ca_cert,
    })
}

pub struct Relay {
    pub guard: Guard,
    pub addr: SocketAddr,
}

pub fn start_relay(bin: &Path, origin: SocketAddr) -> Result<Relay> {
    let mut cmd = pinned(CPU_PROXY, bin);
    cmd.arg("--target").arg(origin.to_string());
    let mut guard = Guard::spawn("bench-relay", cmd)?;
    let (addr, _) = announced_addr(&mut guard)?;
    Ok(Relay { guard, addr })
}

pub struct Agent {
    pub guard: Guard,
    pub https: SocketAddr,
    pub ca_cert: PathBuf,
}

fn yaml_str(p: &Path) -> String {
    // JSON strings are valid YAML scalars and escape anything odd in the path.
    Value::String(p.display().to_string()).to_string()
}

/// Whether the agent writes its audit log (one JSON line per request) or runs at `warn`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Audit {
    /// `log.level: warn`: records are counted, not written (the main bench).
    Off,
    /// `log.level: info`: every record written, stderr to a file (the audit pair).
    On,
}

fn ensure_agent_ca(bin: &Path, workdir: &Path) -> Result<(PathBuf, PathBuf)> {
    let ca_dir = workdir.join("agent-ca");
    let (ca_cert, ca_key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    if ca_cert.is_file() && ca_key.is_file() {
        return Ok((ca_cert, ca_key));
    }
    let mut gen_ca = Command::new(bin);
    gen_ca.arg("generate-ca").arg("--outdir").arg(&ca_dir);
    let mut g = Guard::spawn("iron-agent generate-ca", gen_ca)?;
    let status = g.wait_bounded(Duration::from_secs(30))?;
    if !status.success() {
        bail!(
            "`iron-agent generate-ca` failed ({status}): {}",
            g.stderr_tail.text()
        );
    }
    if !ca_cert.is_file() || !ca_key.is_file() {
        bail!(
            "`iron-agent generate-ca --outdir {}` exited 0 but wrote no ca.crt/ca.key (is `generate-ca` implemented?)",
            ca_dir.display()
        );
    }
    Ok((ca_cert, ca_key))
}

pub fn start_agent(bin: &Path, workdir: &Path, origin_ca: &Path, audit: Audit) -> Result<Agent> {
    let (ca_cert, ca_key) = ensure_agent_ca(bin, workdir)?;

    // At `log.level: warn` the agent's INFO "listening" lines are filtered out, so we choose the
    // ports ourselves (free a moment ago) and probe them; a "listening" line still wins if logged.
    let [http, https, metrics] = free_ports()?;
    let config = format!(
        "dns:\n  enabled: false\n\
         proxy:\n  http_listen: \"127.0.0.1:{http}\"\n  https_listen: \"127.0.0.1:{https}\"\n  upstream_deny_cidrs: []\n\
         tls:\n  ca_cert: {}\n  ca_key: {}\n\
         metrics:\n  listen: \"127.0.0.1:{metrics}\"\n\
         log:\n  level: {level}\n\
         transforms:\n  - name: allowlist\n    config:\n      domains: [localhost]\n",
        yaml_str(&ca_cert),
        yaml_str(&ca_key),
        // warn: audit lines are counted but not written; info: every record is written.
        level = if audit == Audit::On { "info" } else { "warn" },
    );
    let config_path = workdir.join(match audit {
        Audit::Off => "agent.yaml",
        Audit::On => "agent-audit.yaml",
    });
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;

    let mut cmd = pinned(CPU_PROXY, bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config_path)
        .env("SSL_CERT_FILE", origin_ca);
    let mut guard = match audit {
        Audit::Off => Guard::spawn("iron-agent", cmd)?,
        Audit::On => Guard::spawn_with_stderr("iron-agent (audit on)", cmd, log_file(workdir)?)?,
    };
    let https = wait_ready(&mut guard, SocketAddr::from(([127, 0, 0, 1], https)))?;
    Ok(Agent {
        guard,
        https,
        ca_cert,
    })
}

/// Where the audit-on agent's stderr goes.
pub fn audit_log_path(workdir: &Path) -> PathBuf {
    workdir.join("agent-audit.log")
}

fn log_file(workdir: &Path) -> Result<std::process::Stdio> {
    let path = audit_log_path(workdir);
    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(f.into())
}

/// Audit lines (`"msg":"request"`) in the audit-on agent's log.
pub fn audit_lines_written(workdir: &Path) -> Option<u64> {
    let text = std::fs::read(audit_log_path(workdir)).ok()?;
    let needle = b"\"msg\":\"request\"";
    Some(
        text.split(|b| *b == b'\n')
            .filter(|l| l.windows(needle.len()).any(|w| w == needle))
            .count() as u64,
    )
}

/// Three distinct loopback ports that were free when we asked.
pub(super) fn free_ports() -> Result<[u16; 3]> {
    // Hold all three at once so they differ; released when this returns.
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port");
    let ls = [bind()?, bind()?, bind()?];
    let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).context("local_addr");
    Ok([port(&ls[0])?, port(&ls[1])?, port(&ls[2])?])
}

/// Waits until the agent's https listener accepts connections (or announces itself in a
/// `{"msg":"listening","listener":"https"}` log line), the agent exits, or the timeout passes.
pub(super) fn wait_ready(guard: &mut Guard, https: SocketAddr) -> Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    // None when stderr goes to a file: then only the port probe tells.
    let rx = guard.stderr_lines.take();
    loop {
        while let Some(Ok(line)) = rx.as_ref().map(|rx| rx.try_recv()) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v.get("msg").and_then(Value::as_str) == Some("listening")
                && v.get("listener").and_then(Value::as_str) == Some("https")
                && let Some(addr) = v
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
            {
                return Ok(addr);
            }
        }
        if TcpStream::connect_timeout(&https, Duration::from_millis(100)).is_ok() {
            return Ok(https);
        }
        if let Some(status) = guard.exited() {
            std::thread::sleep(Duration::from_millis(100));
            bail!(
                "the agent exited before listening ({status}); stderr:\n{}",
                guard.stderr_tail.text()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the agent did not accept connections on its https listener {https} within {START_TIMEOUT:?}; stderr:\n{}",
                guard.stderr_tail.text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `iron-agent bench-mint --iterations N` → mean leaf-mint time in µs, or why it is unavailable.
pub fn leaf_mint_us(bin: &Path) -> std::result::Result<f64, String> {
    let mut cmd = pinned(CPU_PROXY, bin);
    cmd.args(["bench-mint", "--iterations", "200"]);
    let mut g = Guard::spawn("iron-agent bench-mint", cmd).map_err(|e| format!("{e:#}"))?;
    let status = g
        .wait_bounded(Duration::from_secs(60))
        .map_err(|e| format!("{e:#}"))?;
    let out = g.remaining_stdout();
    if !status.success() {
        return Err(format!(
            "bench-mint failed ({status}): {}",
            g.stderr_tail.text().trim()
        ));
    }
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("mean_us").and_then(Value::as_f64))
        .ok_or_else(|| {
            "bench-mint printed no {\"mean_us\": ...} line (subcommand not implemented?)".to_owned()
        })
}
