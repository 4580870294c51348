//! `cargo xtask bench --intercept`: one governed workload reaching a "remote" HTTPS origin
//! directly, through the agent's eBPF redirect, and through the same agent behind an iptables
//! REDIRECT rule. Root only.
//!
//! Setup: a network namespace `iabench` holds bench-origin (certificate for `bench.test`) at
//! 10.232.0.2:443, joined to the host by a veth pair (host side 10.232.0.1). A tiny in-process DNS
//! server answers `bench.test` → 10.232.0.2 for the agent's `dns.upstream_resolver`. oha runs as
//! the system user `iabench` (setpriv) and always connects to 10.232.0.2:443 (`--connect-to`
//! keeps `bench.test` for Host and SNI):
//!
//! * direct: nothing in between; oha trusts the origin CA.
//! * ebpf: the agent with `intercept: {mode: ebpf, default: exempt, governed: {users: [iabench]}}`;
//!   the kernel redirects oha's connects to the agent's HTTPS listener.
//! * iptables: the same agent without `intercept:`, plus a nat OUTPUT REDIRECT rule for the user's
//!   TCP to 10.232.0.2:443; the agent routes by SNI as in DNS mode.
//!
//! oha trusts only the agent CA in the agent scenarios and only the origin CA in the direct one, so
//! a response proves which path it took.
//!
//! Cleanup: the namespace and veth, the rule and the pins are removed when [`HostState`] drops,
//! and by a watchdog shell if xtask dies without dropping it (Ctrl-C, SIGKILL).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    Measured,
    oha::Load,
    procfs,
    servers::{Bins, CPU_ORIGIN, CPU_PROXY},
};
use crate::{children::Guard, cmd::describe};

const NETNS: &str = "iabench";
const VETH: &str = "viabench";
const HOST_CIDR: &str = "10.232.0.1/24";
const ORIGIN_CIDR: &str = "10.232.0.2/24";
const ORIGIN_IP: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);
const NAME: &str = "bench.test";
const USER: &str = "iabench";
const PIN_DIR: &str = "/sys/fs/bpf/iron-agent-bench";
const RULE_COMMENT: &str = "iron-agent-bench";
/// Concurrency of the throughput runs (as `OTHER_CONNS` in the main bench).
const CONNS: u32 = 16;
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What the main bench already has: built binaries, oha, a scratch directory, run lengths.
pub struct Setup<'a> {
    pub root: &'a Path,
    pub bins: &'a Bins,
    pub oha: &'a Path,
    pub workdir: &'a Path,
    pub duration: Duration,
    pub warmup: Duration,
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub const NOT_ROOT: &str = "the interception benchmark needs root (eBPF programs, a network namespace, iptables, a test user)";

pub fn run(s: &Setup<'_>) -> Result<()> {
    if !is_root() {
        bail!("{NOT_ROOT}; run as root or use `cargo xtask bench` without --intercept");
    }
    for (tool, pkg) in [("ip", "iproute2"), ("setpriv", "util-linux")] {
        if !crate::cmd::succeeds(Command::new(tool).arg("-V")) {
            bail!("`{tool}` ({pkg}) is required for the interception benchmark");
        }
    }
    let (uid, gid) = ensure_user(USER)?;
    let dir = s.workdir.join("intercept");
    for d in [s.workdir, dir.as_path()] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        // The bench user reads the CAs and runs oha from here.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", d.display()))?;
    }

    // Declared first so it drops last, after every process below has been stopped.
    let host = HostState::arm()?;
    host.create_netns()?;
    let mut origin = start_origin(&s.bins.origin, &dir.join("origin"))?;
    let dns = FakeDns::start(NAME, ORIGIN_IP)?;
    let (agent_ca, agent_key) = generate_ca(&s.bins.agent, &dir.join("agent-ca"))?;
    let oha = oha_as_user(s.oha, &dir, uid, gid)?;

    let b = Bench {
        oha: &oha,
        agent_bin: &s.bins.agent,
        dir: &dir,
        origin_ca: &origin.1,
        agent_ca: &agent_ca,
        agent_key: &agent_key,
        resolver: dns.addr,
        duration: s.duration,
        warmup: s.warmup,
        ticks: procfs::clock_ticks_per_sec(),
    };
    let loadavg_before = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();

    let direct = b
        .scenario("direct", b.origin_ca, None)
        .map_err(|e| format!("{e:#}"));
    let ebpf = b.ebpf(&host).map_err(|e| format!("{e:#}"));
    let iptables = b.iptables(uid).map_err(|e| format!("{e:#}"));

    if let Some(status) = origin.0.exited() {
        bail!(
            "bench-origin exited during the run ({status}); stderr:\n{}",
            origin.0.stderr_tail.text()
        );
    }
    let report = Report {
        run_seconds: s.duration.as_secs_f64(),
        warmup_seconds: s.warmup.as_secs_f64(),
        loadavg_before,
        scenarios: [("direct", direct), ("ebpf", ebpf), ("iptables", iptables)],
    };
    report.print();
    let out = s.root.join("bench-results");
    report.write_json(&out)?;
    eprintln!("raw numbers: {}", out.join("intercept.json").display());
    drop(origin);
    drop(dns);
    drop(host);

    let failed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    if !failed.is_empty() {
        bail!(
            "interception scenario(s) failed: {} (see above)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs a command to completion (bounded), failing with its stderr.
fn sh(what: &[&str]) -> Result<String> {
    let mut cmd = Command::new("timeout");
    cmd.arg("30").args(what);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{}`", describe(&cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            what.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The bench's system user (created once and kept, like the end-to-end tests' users).
fn ensure_user(name: &str) -> Result<(u32, u32)> {
    if sh(&["id", "-u", name]).is_err() {
        eprintln!("==> creating system user {name} (kept for later runs)");
        sh(&[
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])?;
    }
    let id = |flag: &str| -> Result<u32> {
        sh(&["id", flag, name])?
            .parse()
            .with_context(|| format!("`id {flag} {name}` is not a number"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Host state the bench creates: the namespace and veth pair, the iptables rule, the pins.
struct HostState {
    watchdog: Option<Child>,
}

fn cleanup_script() -> String {
    format!(
        "iptables -t nat -S OUTPUT 2>/dev/null | grep -e '--comment {RULE_COMMENT}' | sed 's/^-A /-D /' \
         | while read -r rule; do iptables -t nat $rule; done; \
         rm -rf {PIN_DIR}; ip netns del {NETNS} 2>/dev/null; ip link del {VETH} 2>/dev/null; true"
    )
}

impl HostState {
    /// Removes leftovers of an earlier run, then starts a watchdog that cleans up if we die
    /// without dropping this (it polls our pid; its own process group keeps it out of Ctrl-C).
    fn arm() -> Result<Self> {
        sh(&["sh", "-c", &cleanup_script()])?;
        let me = std::process::id();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' INT TERM HUP; while kill -0 {me} 2>/dev/null; do sleep 0.5; done; {}",
                cleanup_script()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cleanup watchdog")?;
        Ok(Self {
            watchdog: Some(watchdog),
        })
    }

    fn create_netns(&self) -> Result<()> {
        let peer = format!("{VETH}p");
        let ns = ["ip", "netns", "exec", NETNS];
        let in_ns = |args: &[&str]| sh(&[&ns[..], args].concat());
        sh(&["ip", "netns", "add", NETNS])?;
        sh(&[
            "ip", "link", "add", VETH, "type", "veth", "peer", "name", &peer,
        ])?;
        sh(&["ip", "link", "set", &peer, "netns", NETNS])?;
        sh(&["ip", "addr", "add", HOST_CIDR, "dev", VETH])?;
        sh(&["ip", "link", "set", VETH, "up"])?;
        in_ns(&["ip", "addr", "add", ORIGIN_CIDR, "dev", &peer])?;
        in_ns(&["ip", "link", "set", &peer, "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Detaches the eBPF programs a stopped agent left pinned (they fail closed otherwise).
    fn unpin(&self) -> Result<()> {
        match std::fs::remove_dir_all(PIN_DIR) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {PIN_DIR}"))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Err(e) = sh(&["sh", "-c", &cleanup_script()]) {
            eprintln!("warning: interception bench cleanup: {e:#}");
        }
    }
}

/// bench-origin inside the namespace; returns it and the path of its CA.
fn start_origin(bin: &Path, ca_dir: &Path) -> Result<(Guard, PathBuf)> {
    let mut cmd = Command::new("ip");
    // `ip netns exec` execs in place, so the guard's pid is the origin's.
    cmd.args(["netns", "exec", NETNS, "taskset", "-c", CPU_ORIGIN])
        .arg(bin)
        .arg("--ca-dir")
        .arg(ca_dir)
        .args(["--listen", &format!("{ORIGIN_IP}:443"), "--name", NAME]);
    let mut guard = Guard::spawn("bench-origin (netns)", cmd)?;
    let line = guard.first_stdout_line(START_TIMEOUT)?;
    let v: Value =
        serde_json::from_str(&line).with_context(|| format!("bench-origin printed {line:?}"))?;
    let ca = v
        .get("ca")
        .and_then(Value::as_str)
        .context("bench-origin did not say where its CA is")?;
    Ok((guard, PathBuf::from(ca)))
}

fn generate_ca(agent: &Path, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut cmd = Command::new(agent);
    cmd.arg("generate-ca").arg("--outdir").arg(dir);
    let mut g = Guard::spawn("iron-agent generate-ca", cmd)?;
    let status = g.wait_bounded(Duration::from_secs(30))?;
    if !status.success() {
        bail!(
            "`iron-agent generate-ca` failed ({status}): {}",
            g.stderr_tail.text()
        );
    }
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    // oha, running as the bench user, must read the certificate (the key stays private).
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", cert.display()))?;
    Ok((cert, key))
}

/// A script that runs oha as the bench user, for [`Load::oha`]. oha is copied next to it because
/// its usual home ($CARGO_HOME/bin under /root) is not readable by other users.
fn oha_as_user(oha: &Path, dir: &Path, uid: u32, gid: u32) -> Result<PathBuf> {
    let copy = dir.join("oha");
    std::fs::copy(oha, &copy).with_context(|| format!("copying oha to {}", copy.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", copy.display()))?;
    let script = dir.join("oha-as-bench-user");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec setpriv --reuid={uid} --regid={gid} --clear-groups -- {} \"$@\"\n",
            copy.display()
        ),
    )
    .with_context(|| format!("writing {}", script.display()))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", script.display()))?;
    Ok(script)
}

/// Answers `name` A → `ip` (other types: no data; other names: NXDOMAIN) on 127.0.0.1 over UDP.
struct FakeDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    fn start(name: &'static str, ip: Ipv4Addr) -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding the fake resolver")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .context("fake resolver timeout")?;
        let addr = sock.local_addr().context("fake resolver address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = buf.get(..n).and_then(|q| dns_answer(q, name, ip)) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to a one-question DNS query, or `None` for anything malformed.
fn dns_answer(q: &[u8], name: &str, ip: Ipv4Addr) -> Option<Vec<u8>> {
    let header = q.get(..12)?;
    if header.get(4..6)? != [0, 1] || header.get(2)? & 0x80 != 0 {
        return None; // not exactly one question, or a response
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression pointers never appear in a question we accept
        }
        labels.push(
            std::str::from_utf8(q.get(i..i + len)?)
                .ok()?
                .to_ascii_lowercase(),
        );
        i += len;
    }
    let question = q.get(12..i + 4)?;
    let qtype = q.get(i..i + 2)?;
    let qclass = q.get(i + 2..i + 4)?;
    let known = labels.join(".") == name;
    let answer = known && qtype == [0, 1] && qclass == [0, 1];

    let mut r = Vec::with_capacity(question.len() + 32);
    r.extend_from_slice(header.get(..2)?); // id
    r.push(0x84 | (header.get(2)? & 0x01)); // QR, AA, RD copied
    r.push(if known { 0x80 } else { 0x83 }); // RA; NOERROR or NXDOMAIN
    r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if answer {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]); // name → offset 12, A, IN
        r.extend_from_slice(&300u32.to_be_bytes()); // TTL
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

fn yaml_str(p: &Path) -> String {
    Value::String(p.display().to_string()).to_string()
}

/// Busy time of all CPUs from /proc/stat (user..steal, without idle and iowait), in µs.
fn machine_busy_us(ticks: u64) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = v.as_slice() else {
        return None;
    };
    Some((user + nice + system + irq + softirq + steal) * 1_000_000 / ticks.max(1))
}

/// One measured run: the client's view, the agent's CPU, and the whole machine's busy time.
#[derive(Clone, Debug)]
struct Run {
    m: Measured,
    machine_us: Option<u64>,
}

impl Run {
    fn machine_us_per_request(&self) -> Option<f64> {
        let us = self.machine_us? as f64;
        (self.m.load.ok > 0).then(|| us / self.m.load.ok as f64)
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    /// A new TLS connection per request, one at a time: connection setup latency.
    setup_c1: Run,
    /// A new TLS connection per request, `CONNS` at a time.
    setup: Run,
    keepalive: Run,
    mib: Run,
}

struct Bench<'a> {
    oha: &'a Path,
    agent_bin: &'a Path,
    dir: &'a Path,
    origin_ca: &'a Path,
    agent_ca: &'a Path,
    agent_key: &'a Path,
    resolver: SocketAddr,
    duration: Duration,
    warmup: Duration,
    ticks: u64,
}

impl Bench<'_> {
    fn load<'b>(
        &'b self,
        url: &'b str,
        ca_cert: &'b Path,
        connections: u32,
        keepalive: bool,
        duration: Duration,
    ) -> Load<'b> {
        Load {
            oha: self.oha,
            url,
            // Always to the origin's real address: the kernel or iptables decides where it goes.
            connect_to: Some(format!("{NAME}:443:{ORIGIN_IP}:443")),
            ca_cert,
            connections,
            duration,
            keepalive,
            cpu: CPU_PROXY,
        }
    }

    fn measure(
        &self,
        name: &str,
        path: &str,
        ca: &Path,
        agent: Option<u32>,
        connections: u32,
        keepalive: bool,
    ) -> Result<Run> {
        let url = format!("https://{NAME}{path}");
        let cpu = |pid: Option<u32>| pid.map(|p| procfs::cpu_us(p, self.ticks)).transpose();
        let (agent_before, machine_before) = (cpu(agent)?, machine_busy_us(self.ticks));
        let load = self
            .load(&url, ca, connections, keepalive, self.duration)
            .run()?;
        let (agent_after, machine_after) = (cpu(agent)?, machine_busy_us(self.ticks));
        if load.ok == 0 {
            bail!(
                "no successful requests to {url} in scenario {name} ({})",
                if load.failure_kinds.is_empty() {
                    "no responses".to_owned()
                } else {
                    load.failure_kinds.join(", ")
                }
            );
        }
        let diff = |b: Option<u64>, a: Option<u64>| Some(a?.saturating_sub(b?));
        Ok(Run {
            m: Measured {
                load,
                cpu_us: diff(agent_before, agent_after),
            },
            machine_us: diff(machine_before, machine_after),
        })
    }

    /// Waits until a request through the scenario's path succeeds (the agent listens, the
    /// programs or the rule are in force), then warms up.
    fn ready(&self, name: &str, ca: &Path, agent: Option<&mut Guard>) -> Result<()> {
        let url = format!("https://{NAME}/small");
        let deadline = Instant::now() + START_TIMEOUT;
        let mut agent = agent;
        loop {
            // A failed probe (oha error included) is retried until the deadline.
            let last = match self
                .load(&url, ca, 1, true, Duration::from_millis(300))
                .run()
            {
                Ok(probe) if probe.ok > 0 => break,
                Ok(probe) => probe.failure_kinds.join(", "),
                Err(e) => format!("{e:#}"),
            };
            if let Some(g) = agent.as_deref_mut()
                && let Some(status) = g.exited()
            {
                bail!(
                    "the agent exited ({status}); stderr:\n{}",
                    g.stderr_tail.text()
                );
            }
            if Instant::now() >= deadline {
                let agent_log = agent.map(|g| g.stderr_tail.text()).unwrap_or_default();
                bail!(
                    "{name}: no successful request within {START_TIMEOUT:?} ({last}){}",
                    if agent_log.is_empty() {
                        String::new()
                    } else {
                        format!("; agent stderr:\n{agent_log}")
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("==> {name}: warm-up");
        let warm = self.load(&url, ca, CONNS, true, self.warmup).run()?;
        if warm.ok == 0 {
            bail!(
                "{name}: warm-up got no successful responses: {}",
                warm.failure_kinds.join(", ")
            );
        }
        Ok(())
    }

    fn scenario(&self, name: &str, ca: &Path, agent: Option<&mut Guard>) -> Result<Scenario> {
        let pid = agent.as_ref().map(|g| g.pid());
        self.ready(name, ca, agent)?;
        eprintln!("==> {name}: new TLS connection per request, 1 connection");
        let setup_c1 = self.measure(name, "/small", ca, pid, 1, false)?;
        eprintln!("==> {name}: new TLS connection per request, {CONNS} connections");
        let setup = self.measure(name, "/small", ca, pid, CONNS, false)?;
        eprintln!("==> {name}: keep-alive, {CONNS} connections");
        let keepalive = self.measure(name, "/small", ca, pid, CONNS, true)?;
        eprintln!("==> {name}: 1 MiB downloads, {CONNS} connections");
        let mib = self.measure(name, "/1mib", ca, pid, CONNS, true)?;
        Ok(Scenario {
            setup_c1,
            setup,
            keepalive,
            mib,
        })
    }

    /// The release agent on CPU 0, with or without the `intercept:` block; returns it and its
    /// HTTPS port once that accepts connections.
    fn start_agent(&self, ebpf: bool) -> Result<(Guard, u16)> {
        let [http, https, metrics] = super::servers::free_ports()?;
        let intercept = if ebpf {
            format!(
                "intercept:\n  mode: ebpf\n  default: exempt\n  governed:\n    users: [{USER}]\n  pin_dir: \"{PIN_DIR}\"\n"
            )
        } else {
            String::new()
        };
        // DNS server off: oha does not resolve (--connect-to), and governed UDP 53 is then denied,
        // which nothing here needs. The upstream resolver is the fake one (bench.test only).
        let config = format!(
            "dns:\n  enabled: false\n  upstream_resolver: \"{}\"\n\
             proxy:\n  http_listen: \"127.0.0.1:{http}\"\n  https_listen: \"127.0.0.1:{https}\"\n\
             tls:\n  ca_cert: {}\n  ca_key: {}\n\
             metrics:\n  listen: \"127.0.0.1:{metrics}\"\n\
             log:\n  level: warn\n\
             transforms:\n  - name: allowlist\n    config:\n      domains: [{NAME}]\n{intercept}",
            self.resolver,
            yaml_str(self.agent_ca),
            yaml_str(self.agent_key),
        );
        let path = self.dir.join(if ebpf {
            "agent-ebpf.yaml"
        } else {
            "agent.yaml"
        });
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;

        let mut cmd = Command::new("taskset");
        cmd.args(["-c", CPU_PROXY])
            .arg(self.agent_bin)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("SSL_CERT_FILE", self.origin_ca);
        let mut guard = Guard::spawn("iron-agent", cmd)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], https));
        super::servers::wait_ready(&mut guard, addr)?;
        Ok((guard, https))
    }

    fn ebpf(&self, host: &HostState) -> Result<Scenario> {
        let result = self.start_agent(true).and_then(|(mut agent, _)| {
            let r = self.scenario("ebpf", self.agent_ca, Some(&mut agent));
            agent.stop();
            r
        });
        // The stopped agent's programs stay attached (failing closed) until the pins go.
        host.unpin()?;
        result
    }

    fn iptables(&self, uid: u32) -> Result<Scenario> {
        if !crate::cmd::succeeds(Command::new("iptables").arg("--version")) {
            bail!("`iptables` is not installed (apt-get install -y iptables)");
        }
        let (mut agent, https) = self.start_agent(false)?;
        let _rule = Redirect::add(uid, https)?;
        let r = self.scenario("iptables", self.agent_ca, Some(&mut agent));
        agent.stop();
        r
    }
}

/// `iptables -t nat -A OUTPUT ... -j REDIRECT` for the bench user's TCP to the origin, deleted
/// on drop.
struct Redirect {
    spec: Vec<String>,
}

impl Redirect {
    fn add(uid: u32, port: u16) -> Result<Self> {
        let spec: Vec<String> = [
            "OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            &uid.to_string(),
            "-p",
            "tcp",
            "-d",
            &format!("{ORIGIN_IP}/32"),
            "--dport",
            "443",
            "-m",
            "comment",
            "--comment",
            RULE_COMMENT,
            "-j",
            "REDIRECT",
            "--to-ports",
            &port.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let me = Self { spec };
        me.iptables("-A")?;
        Ok(me)
    }

    fn iptables(&self, op: &str) -> Result<String> {
        let mut args = vec!["iptables", "-t", "nat", op];
        args.extend(self.spec.iter().map(String::as_str));
        sh(&args)
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        if let Err(e) = self.iptables("-D") {
            eprintln!("warning: removing the iptables rule: {e:#}");
        }
    }
}

struct Report {
    run_seconds: f64,
    warmup_seconds: f64,
    loadavg_before: String,
    scenarios: [(&'static str, Result<Scenario, String>); 3],
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_owned(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

type Metric = (String, fn(&Scenario) -> Option<f64>, usize);

fn metrics() -> Vec<Metric> {
    fn ok(v: f64) -> Option<f64> {
        Some(v)
    }
    vec![
        (
            "new conn c=1   p50 ms".into(),
            |s| ok(s.setup_c1.m.load.p50_ms),
            3,
        ),
        (
            "new conn c=1   p99 ms".into(),
            |s| ok(s.setup_c1.m.load.p99_ms),
            3,
        ),
        (
            "new conn c=1   req/s".into(),
            |s| ok(s.setup_c1.m.load.ok_per_sec),
            0,
        ),
        (
            format!("new conn c={CONNS}  req/s"),
            |s| ok(s.setup.m.load.ok_per_sec),
            0,
        ),
        (
            format!("new conn c={CONNS}  p50 ms"),
            |s| ok(s.setup.m.load.p50_ms),
            3,
        ),
        (
            format!("new conn c={CONNS}  p99 ms"),
            |s| ok(s.setup.m.load.p99_ms),
            3,
        ),
        (
            format!("new conn c={CONNS}  agent CPU us/req"),
            |s| s.setup.m.cpu_us_per_request(),
            1,
        ),
        (
            format!("new conn c={CONNS}  machine CPU us/req"),
            |s| s.setup.machine_us_per_request(),
            1,
        ),
        (
            format!("keep-alive c={CONNS} req/s"),
            |s| ok(s.keepalive.m.load.ok_per_sec),
            0,
        ),
        (
            format!("keep-alive c={CONNS} p50 ms"),
            |s| ok(s.keepalive.m.load.p50_ms),
            3,
        ),
        (
            format!("keep-alive c={CONNS} p99 ms"),
            |s| ok(s.keepalive.m.load.p99_ms),
            3,
        ),
        (
            format!("keep-alive c={CONNS} agent CPU us/req"),
            |s| s.keepalive.m.cpu_us_per_request(),
            1,
        ),
        (
            format!("keep-alive c={CONNS} machine CPU us/req"),
            |s| s.keepalive.machine_us_per_request(),
            1,
        ),
        (
            format!("1 MiB c={CONNS}      MiB/s"),
            |s| ok(s.mib.m.load.mib_per_sec),
            1,
        ),
        (
            format!("1 MiB c={CONNS}      agent CPU us/MiB"),
            |s| s.mib.m.cpu_us_per_mib(),
            0,
        ),
    ]
}

const LABEL: usize = 40;
const COL: usize = 11;

impl Report {
    fn get(&self, name: &str) -> Option<&Scenario> {
        self.scenarios
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, r)| r.as_ref().ok())
    }

    fn print(&self) {
        let (d, e, i) = (self.get("direct"), self.get("ebpf"), self.get("iptables"));
        println!();
        println!(
            "iron-agent interception bench: HTTPS to {NAME} ({ORIGIN_IP}:443, network namespace) as user {USER}, {:.1} s per run after a {:.1} s warm-up",
            self.run_seconds, self.warmup_seconds
        );
        println!(
            "direct = no agent; ebpf = agent via the cgroup connect redirect; iptables = same agent via nat OUTPUT REDIRECT"
        );
        println!(
            "pinning: oha + agent on CPU {CPU_PROXY}, origin on CPU {CPU_ORIGIN}; load average before: {}",
            self.loadavg_before
        );
        println!();
        println!(
            "{:<LABEL$}{:>COL$}{:>COL$}{:>COL$}{:>COL$}",
            "", "direct", "ebpf", "iptables", "ebpf/ipt"
        );
        for (label, f, decimals) in metrics() {
            let (dv, ev, iv) = (d.and_then(f), e.and_then(f), i.and_then(f));
            println!(
                "{label:<LABEL$}{:>COL$}{:>COL$}{:>COL$}{:>COL$}",
                fmt(dv, decimals),
                fmt(ev, decimals),
                fmt(iv, decimals),
                fmt(ratio(ev, iv), 2)
            );
        }
        let errors: Vec<String> = [("direct", d), ("ebpf", e), ("iptables", i)]
            .into_iter()
            .filter_map(|(n, s)| Some((n, s?)))
            .flat_map(|(n, s)| {
                [&s.setup_c1, &s.setup, &s.keepalive, &s.mib]
                    .into_iter()
                    .filter(|r| r.m.load.failures > 0)
                    .map(move |r| format!("{n}: {}", r.m.load.failure_kinds.join(", ")))
            })
            .collect();
        println!();
        println!(
            "agent CPU: the agent process (utime+stime); eBPF program and netfilter time is kernel time in the client's context, only in machine CPU (all CPUs busy, includes the origin and oha)"
        );
        if !errors.is_empty() {
            println!("request errors: {}", errors.join("; "));
        }
        for (name, r) in &self.scenarios {
            if let Err(e) = r {
                println!("{name}: FAILED: {e}");
            }
        }
    }

    fn write_json(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::write(dir.join(".gitignore"), "*\n");
        let run = |r: &Run| {
            json!({
                "seconds": r.m.load.seconds,
                "ok": r.m.load.ok,
                "ok_per_sec": r.m.load.ok_per_sec,
                "bytes": r.m.load.bytes,
                "mib_per_sec": r.m.load.mib_per_sec,
                "p50_ms": r.m.load.p50_ms,
                "p99_ms": r.m.load.p99_ms,
                "failures": r.m.load.failures,
                "failure_kinds": r.m.load.failure_kinds,
                "agent_cpu_us": r.m.cpu_us,
                "agent_cpu_us_per_request": r.m.cpu_us_per_request(),
                "agent_cpu_us_per_mib": r.m.cpu_us_per_mib(),
                "machine_cpu_us": r.machine_us,
                "machine_cpu_us_per_request": r.machine_us_per_request(),
            })
        };
        let mut scenarios = serde_json::Map::new();
        for (name, r) in &self.scenarios {
            let v = match r {
                Err(e) => json!({ "error": e }),
                Ok(s) => json!({
                    "new_conn_c1": run(&s.setup_c1),
                    "new_conn": run(&s.setup),
                    "keepalive": run(&s.keepalive),
                    "download_1mib": run(&s.mib),
                }),
            };
            scenarios.insert((*name).to_owned(), v);
        }
        let ratios: serde_json::Map<String, Value> = metrics()
            .into_iter()
            .map(|(label, f, _)| {
                let r = ratio(
                    self.get("ebpf").and_then(f),
                    self.get("iptables").and_then(f),
                );
                (
                    label.split_whitespace().collect::<Vec<_>>().join(" "),
                    json!(r),
                )
            })
            .collect();
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let doc = json!({
            "unix_time": unix_time,
            "run_seconds": self.run_seconds,
            "warmup_seconds": self.warmup_seconds,
            "connections": CONNS,
            "origin": format!("https://{NAME} at {ORIGIN_IP}:443 (network namespace {NETNS})"),
            "user": USER,
            "loadavg_before": self.loadavg_before,
            "scenarios": scenarios,
            "ebpf_over_iptables": ratios,
        });
        let path = dir.join("intercept.json");
        let text = serde_json::to_string_pretty(&doc).context("serialising the report")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn answers_a_for_the_name_only() {
        let ip = Ipv4Addr::new(10, 232, 0, 2);
        let q = query("Bench.Test", 1);
        let r = dns_answer(&q, "bench.test", ip).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 232, 0, 2]);

        let aaaa = dns_answer(&query("bench.test", 28), "bench.test", ip).unwrap();
        assert_eq!((aaaa[3] & 0x0f, &aaaa[6..8]), (0, &[0u8, 0][..]));
        let other = dns_answer(&query("other.test", 1), "bench.test", ip).unwrap();
        assert_eq!(other[3] & 0x0f, 3, "NXDOMAIN");
        assert!(dns_answer(&q[..q.len() - 1], "bench.test", ip).is_none());
    }

    #[test]
    fn machine_busy_time_is_readable() {
        assert!(machine_busy_us(100).is_some());
    }
}
