//! End-to-end tests of the eBPF interception (agent-ebpf + `iron_agent::ebpf`).
//!
//! They need root, a cgroup v2 mount, BPF support and an eBPF object built into the binary; when
//! one of these is missing each test reports `SKIPPED: <reason>` on stderr (uncaptured) and
//! returns. Set `IRON_AGENT_REQUIRE_EBPF=1` to turn a missing object into a failure (CI).
//!
//! Safety of the host: the programs are attached at the cgroup root (as in production) but with
//! `default_mode = Exempt`, so only the test user (`iron-ebpf-test`) and, where a test says so,
//! the test's own cgroup are governed. Destinations are TEST-NET addresses (and 8.8.8.8 for DNS):
//! governed traffic to them is either redirected to loopback listeners of this test or denied in
//! `connect()`/`sendmsg()` before a packet exists. Root's "not redirected" checks run in a private
//! network namespace that only has `lo`. Every test removes its pins, kills the processes in its
//! cgroup and removes the cgroup when it ends, even on failure (`Env`'s `Drop`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, UdpSocket},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use iron_agent::ebpf::{
    ConnOrigin, Counter, Counters, InterceptConfig, Interceptor, LoopbackPolicy, Mode,
    OrigDstLookup, cgroup2_mount, is_installed, object_built,
};
use iron_agent::identify::{ClientAddr, LocalAddr, PolicyId, Uid};

const TEST_USER: &str = "iron-ebpf-test";
const PYTHON: &str = "/usr/bin/python3";
const POLICY_ID: PolicyId = PolicyId(42);
const TIMEOUT: Duration = Duration::from_secs(10);

/// The programs attach at the cgroup root and share the test user: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

// ------------------------------------------------------------------------------------------------
// Environment and guards
// ------------------------------------------------------------------------------------------------

fn skip(name: &str, why: &str) {
    // Written to the real stderr (not the captured `eprintln!`), so a skip is never silent.
    let test = thread::current().name().unwrap_or(name).to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Env {
    name: String,
    uid: u32,
    gid: u32,
    cgroup: PathBuf,
    pin_dir: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl Env {
    /// `None` (after printing why) when the host cannot run these tests.
    fn setup(name: &str) -> Option<Self> {
        let lock = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            skip(name, "not running as root");
            return None;
        }
        if !object_built() {
            if std::env::var("IRON_AGENT_REQUIRE_EBPF").is_ok_and(|v| v == "1") {
                panic!("IRON_AGENT_REQUIRE_EBPF=1 but the eBPF object was not built");
            }
            skip(
                name,
                "eBPF object not built (toolchain missing at build time, see agent/build.rs)",
            );
            return None;
        }
        if !Path::new("/sys/kernel/btf/vmlinux").exists() && !Path::new("/sys/fs/bpf").exists() {
            skip(name, "kernel without BPF support");
            return None;
        }
        let Ok(cg2) = cgroup2_mount() else {
            skip(name, "no cgroup2 mount");
            return None;
        };
        if !Path::new(PYTHON).exists() {
            skip(name, "/usr/bin/python3 (test client) missing");
            return None;
        }
        for tool in ["setpriv", "unshare", "ip", "useradd"] {
            if !sh(&format!("command -v {tool}")).0 {
                skip(name, &format!("{tool} missing"));
                return None;
            }
        }
        // Idempotent test user.
        if !sh(&format!("id -u {TEST_USER}")).0 {
            let (ok, out) = sh(&format!(
                "useradd --system --no-create-home --shell /usr/sbin/nologin {TEST_USER}"
            ));
            assert!(
                ok || sh(&format!("id -u {TEST_USER}")).0,
                "useradd failed: {out}"
            );
        }
        let uid: u32 = sh(&format!("id -u {TEST_USER}")).1.trim().parse().unwrap();
        let gid: u32 = sh(&format!("id -g {TEST_USER}")).1.trim().parse().unwrap();
        let env = Self {
            name: name.to_owned(),
            uid,
            gid,
            cgroup: cg2.join(format!("iron-ebpf-test-{name}")),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/iron-ebpf-test-{name}")),
            _lock: lock,
        };
        env.cleanup(); // leftovers of an earlier, killed run
        std::fs::create_dir(&env.cgroup).unwrap();
        Some(env)
    }

    fn config(&self, l: &Listeners) -> InterceptConfig {
        InterceptConfig {
            http_v4: Some(v4(&l.http4)),
            https_v4: Some(v4(&l.https4)),
            dns_v4: Some(match l.dns4.local_addr().unwrap() {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!(),
            }),
            http_v6: Some(v6(&l.http6)),
            https_v6: Some(v6(&l.http6)),
            dns_v6: Some(match l.dns6.local_addr().unwrap() {
                SocketAddr::V6(a) => a,
                SocketAddr::V4(_) => unreachable!(),
            }),
            agent_uid: 0,
            // Only the test user (and cgroups a test governs) are affected on this shared host.
            default_mode: Mode::Exempt,
            default_policy_id: 0,
            loopback: LoopbackPolicy::Allow,
            pin_dir: self.pin_dir.clone(),
            cgroup_root: None,
            harden: Default::default(),
        }
    }

    /// Installs at the cgroup root and governs the test user.
    fn install(&self, l: &Listeners) -> Interceptor {
        let icpt = Interceptor::install(&self.config(l)).unwrap();
        icpt.set_uid_policy(Uid(self.uid), Mode::Redirect, POLICY_ID)
            .unwrap();
        icpt
    }

    /// Starts `python3 -c script args...` inside the test cgroup, as the test user or as root,
    /// optionally in a fresh network namespace that only has `lo` (with 192.0.2.10 and
    /// 2001:db8::10 on it, and ICMP "ping" sockets enabled for every group, so that their denial
    /// can only come from the programs).
    fn spawn(&self, who: Who, netns: bool, script: &str, args: &[&str]) -> Running {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.cgroup);
        if netns {
            cmd.args([
                "unshare",
                "-n",
                "sh",
                "-c",
                r#"ip link set lo up && ip addr add 192.0.2.10/32 dev lo && ip -6 addr add 2001:db8::10/128 dev lo nodad && echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range && exec "$@""#,
                "sh",
            ]);
        }
        if let Who::User = who {
            cmd.args([
                "setpriv".to_owned(),
                format!("--reuid={}", self.uid),
                format!("--regid={}", self.gid),
                "--clear-groups".to_owned(),
            ]);
        }
        cmd.args([PYTHON, "-c", script]).args(args);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let mut e = String::new();
            let _ = stderr.read_to_string(&mut e);
            if !e.is_empty() {
                s.push_str("STDERR ");
                s.push_str(&e);
            }
            s
        });
        Running { child, reader }
    }

    fn cleanup(&self) {
        // Kill what runs in the test cgroup (only processes this test started), by pid.
        let procs = self.cgroup.join("cgroup.procs");
        for _ in 0..50 {
            let pids = std::fs::read_to_string(&procs).unwrap_or_default();
            if pids.trim().is_empty() {
                break;
            }
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let parent = self.pin_dir.parent().unwrap();
        let prefix = format!("iron-ebpf-test-{}-staging-", self.name);
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[derive(Clone, Copy)]
enum Who {
    User,
    Root,
}

struct Running {
    child: Child,
    reader: JoinHandle<String>,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for exit and returns stdout (+ stderr).
    fn finish(mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.reader.join().unwrap()
    }
}

fn v4(l: &TcpListener) -> SocketAddrV4 {
    match l.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!(),
    }
}

fn v6(l: &TcpListener) -> SocketAddrV6 {
    match l.local_addr().unwrap() {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(_) => unreachable!(),
    }
}

/// Stand-ins for the agent's listeners, plus a DNS responder answering `ANS:<query>`.
struct Listeners {
    http4: TcpListener,
    https4: TcpListener,
    http6: TcpListener,
    dns4: UdpSocket,
    dns6: UdpSocket,
    stop: Arc<AtomicBool>,
    dns_threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    fn new() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let dns4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns6 = UdpSocket::bind("[::1]:0").unwrap();
        let dns_threads = [&dns4, &dns6]
            .into_iter()
            .map(|s| {
                let s = s.try_clone().unwrap();
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = s.recv_from(&mut buf) {
                            let mut reply = b"ANS:".to_vec();
                            reply.extend_from_slice(&buf[..n]);
                            let _ = s.send_to(&reply, from);
                        }
                    }
                })
            })
            .collect();
        Self {
            http4: TcpListener::bind("127.0.0.1:0").unwrap(),
            https4: TcpListener::bind("127.0.0.1:0").unwrap(),
            http6: TcpListener::bind("[::1]:0").unwrap(),
            dns4,
            dns6,
            stop,
            dns_threads,
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.dns_threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts one connection (bounded wait), answers `OK`, and returns the origin the lookup found.
fn accept_one(l: &TcpListener, lookup: &dyn OrigDstLookup) -> (SocketAddr, Option<ConnOrigin>) {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let (mut s, peer) = loop {
        match l.accept() {
            Ok(x) => break x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection reached the listener"
                );
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let local = s.local_addr().unwrap();
    let origin = lookup.lookup(ClientAddr(peer), LocalAddr(local));
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    let _ = s.read(&mut buf);
    s.write_all(b"OK\n").unwrap();
    (peer, origin)
}

fn counters(i: &Interceptor) -> Counters {
    i.counters().unwrap()
}

fn increased(before: &Counters, after: &Counters, c: Counter) -> bool {
    after.get(c) > before.get(c)
}

// ------------------------------------------------------------------------------------------------
// Client scripts (python3, run as the test user or root)
// ------------------------------------------------------------------------------------------------

/// `tcp.py FAMILY HOST PORT` -> `PEER host port` + `REPLY text`, or `ERR ERRNAME`.
const TCP_CLIENT: &str = r#"
import socket, sys, errno
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
p = s.getpeername()
print("PEER", p[0], p[1], flush=True)
s.sendall(b"hello\n")
print("REPLY", s.recv(100).decode().strip())
"#;

/// `udp.py FAMILY HOST PORT MODE` (MODE = sendto | connect) -> `FROM host port` + `DATA text`,
/// `CPEER host port` for connected sockets, or `ERR ERRNAME`.
const UDP_CLIENT: &str = r#"
import socket, sys, errno
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(5)
dst = (sys.argv[2], int(sys.argv[3]))
try:
    if sys.argv[4] == "connect":
        s.connect(dst)
        p = s.getpeername()
        print("CPEER", p[0], p[1], flush=True)
        s.send(b"query")
    else:
        s.sendto(b"query", dst)
    data, src = s.recvfrom(512)
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno) if e.errno else type(e).__name__); sys.exit(0)
print("FROM", src[0], src[1])
print("DATA", data.decode())
"#;

/// `sock.py` -> one `NAME ok|ERRNAME` line per socket kind.
const SOCKET_CLIENT: &str = r#"
import socket, errno
kinds = [
    ("tcp4", socket.AF_INET, socket.SOCK_STREAM, 0),
    ("udp4", socket.AF_INET, socket.SOCK_DGRAM, 0),
    ("tcp6", socket.AF_INET6, socket.SOCK_STREAM, 0),
    ("udp6", socket.AF_INET6, socket.SOCK_DGRAM, 0),
    ("raw4", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ("raw6", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
    ("rawudp4", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP),
    ("ping4", socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
    ("ping6", socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6),
    ("sctp4", socket.AF_INET, socket.SOCK_STREAM, 132),
    ("mptcp4", socket.AF_INET, socket.SOCK_STREAM, 262),
    ("udplite4", socket.AF_INET, socket.SOCK_DGRAM, 136),
]
for name, fam, ty, proto in kinds:
    try:
        socket.socket(fam, ty, proto).close()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
"#;

/// Root in a private netns: serve on 192.0.2.10:PORT and connect to it. `SERVED` proves the
/// connection reached the real destination (a redirect would have hit 127.0.0.1 and failed).
const NETNS_SELF_CONNECT: &str = r#"
import socket, sys, errno
port = int(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    # A governed task may not even bind the non-loopback address (inbound channel, issue 11).
    srv.bind(("192.0.2.10", port)); srv.listen(1)
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
c = socket.socket(); c.settimeout(5)
try:
    c.connect(("192.0.2.10", port))
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno)); sys.exit(0)
a, _ = srv.accept()
print("SERVED", c.getpeername()[0], c.getpeername()[1])
"#;

fn line<'a>(out: &'a str, tag: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')))
}

/// Runs the TCP client against a redirected destination, accepts it on `listener`, and returns
/// (client output, origin found by the lookup, client pid).
fn redirected_tcp(
    env: &Env,
    icpt: &Interceptor,
    listener: &TcpListener,
    fam: &str,
    host: &str,
    port: u16,
) -> (String, Option<ConnOrigin>, u32) {
    let run = env.spawn(
        Who::User,
        false,
        TCP_CLIENT,
        &[fam, host, &port.to_string()],
    );
    let pid = run.pid();
    let (_, origin) = accept_one(listener, icpt);
    let out = run.finish();
    (out, origin, pid)
}

fn assert_origin(o: Option<ConnOrigin>, dst: &str, uid: u32, pid: u32) -> ConnOrigin {
    let o = o.expect("lookup found no origin for a redirected connection");
    assert_eq!(o.orig_dst, dst.parse::<SocketAddr>().unwrap());
    assert_eq!(o.uid, Uid(uid));
    assert_eq!(o.pid, pid);
    assert_eq!(o.comm, "python3");
    o
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[test]
fn tcp_v4_redirect_lookup_and_getpeername() {
    let Some(env) = Env::setup("tcp4") else {
        return;
    };
    let l = Listeners::new();
    let icpt = env.install(&l);
    let before = counters(&icpt);

    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.http4, "4", "192.0.2.10", 80);
    let o = assert_origin(origin, "192.0.2.10:80", env.uid, pid);
    assert_eq!(o.policy_id, POLICY_ID);
    assert_eq!(
        line(&out, "PEER"),
        Some("192.0.2.10 80"),
        "getpeername: {out}"
    );
    assert_eq!(line(&out, "REPLY"), Some("OK"), "{out}");

    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.https4, "4", "198.51.100.7", 443);
    assert_origin(origin, "198.51.100.7:443", env.uid, pid);
    assert_eq!(line(&out, "REPLY"), Some("OK"), "{out}");

    // Each entry can be looked up once.
    let after = counters(&icpt);
    for c in [
        Counter::RedirectHttp,
        Counter::RedirectHttps,
        Counter::TupleRecorded,
        Counter::PeerRestored,
    ] {
        assert!(
            increased(&before, &after, c),
            "{c:?} did not increase: {after:?}"
        );
    }
}

#[test]
fn tcp_other_ports_denied_with_eperm() {
    let Some(env) = Env::setup("tcpdeny") else {
        return;
    };
    let l = Listeners::new();
    let icpt = env.install(&l);
    let before = counters(&icpt);
    // (TCP 53 is not here: it goes to the agent's DNS listener, like UDP 53.)
    for (host, port) in [
        ("192.0.2.10", "8080"),
        ("198.51.100.7", "22"),
        ("192.0.2.10", "853"),
    ] {
        let out = env
            .spawn(Who::User, false, TCP_CLIENT, &["4", host, port])
            .finish();
        assert_eq!(line(&out, "ERR"), Some("EPERM"), "{host}:{port}: {out}");
    }
    let out = env
        .spawn(Who::User, false, TCP_CLIENT, &["6", "2001:db8::10", "8080"])
        .finish();
    assert_eq!(line(&out, "ERR"), Some("EPERM"), "{out}");
    assert!(counters(&icpt).get(Counter::DenyTcp) >= before.get(Counter::DenyTcp) + 4);
}

#[test]
fn udp_dns_redirect_and_other_udp_denied() {
    let Some(env) = Env::setup("udp") else { return };
    let l = Listeners::new();
    let icpt = env.install(&l);
    let before = counters(&icpt);

    // Unconnected (sendmsg4 + recvmsg4) and connected (connect4 + getpeername4 + recvmsg4).
    let out = env
        .spawn(
            Who::User,
            false,
            UDP_CLIENT,
            &["4", "8.8.8.8", "53", "sendto"],
        )
        .finish();
    assert_eq!(line(&out, "FROM"), Some("8.8.8.8 53"), "{out}");
    assert_eq!(line(&out, "DATA"), Some("ANS:query"), "{out}");
    let out = env
        .spawn(
            Who::User,
            false,
            UDP_CLIENT,
            &["4", "8.8.8.8", "53", "connect"],
        )
        .finish();
    assert_eq!(line(&out, "CPEER"), Some("8.8.8.8 53"), "{out}");
    assert_eq!(line(&out, "FROM"), Some("8.8.8.8 53"), "{out}");
    assert_eq!(line(&out, "DATA"), Some("ANS:query"), "{out}");

    // IPv6 resolver address.
    let out = env
        .spawn(
            Who::User,
            false,
            UDP_CLIENT,
            &["6", "2001:4860:4860::8888", "53", "sendto"],
        )
        .finish();
    assert_eq!(line(&out, "FROM"), Some("2001:4860:4860::8888 53"), "{out}");
    assert_eq!(line(&out, "DATA"), Some("ANS:query"), "{out}");
    // IPv4-mapped resolver on an AF_INET6 socket (sendmsg6/recvmsg6 via the IPv4 listener).
    let out = env
        .spawn(
            Who::User,
            false,
            UDP_CLIENT,
            &["6", "::ffff:8.8.8.8", "53", "sendto"],
        )
        .finish();
    assert_eq!(line(&out, "FROM"), Some("::ffff:8.8.8.8 53"), "{out}");
    assert_eq!(line(&out, "DATA"), Some("ANS:query"), "{out}");

    // Anything else (QUIC, other ports), connected or not, v4 or v6: denied before sending.
    for (fam, host, port, mode) in [
        ("4", "192.0.2.10", "443", "sendto"),
        ("4", "192.0.2.10", "443", "connect"),
        ("4", "198.51.100.7", "9999", "sendto"),
        ("6", "2001:db8::10", "443", "sendto"),
        ("6", "2001:db8::10", "853", "connect"),
    ] {
        let out = env
            .spawn(Who::User, false, UDP_CLIENT, &[fam, host, port, mode])
            .finish();
        assert_eq!(
            line(&out, "ERR"),
            Some("EPERM"),
            "{host}:{port} {mode}: {out}"
        );
    }

    let after = counters(&icpt);
    for c in [
        Counter::RedirectDnsSendmsg,
        Counter::RedirectDnsConnect,
        Counter::DnsReplyRestored,
        Counter::DenyUdp,
    ] {
        assert!(
            increased(&before, &after, c),
            "{c:?} did not increase: {after:?}"
        );
    }
}

#[test]
fn ipv6_mapped_nat64_behave_like_ipv4() {
    let Some(env) = Env::setup("ipv6") else {
        return;
    };
    let l = Listeners::new();
    let icpt = env.install(&l);

    // Native IPv6 -> the IPv6 listener.
    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.http6, "6", "2001:db8::10", 80);
    assert_origin(origin, "[2001:db8::10]:80", env.uid, pid);
    assert_eq!(line(&out, "PEER"), Some("2001:db8::10 80"), "{out}");

    // IPv4-mapped on an AF_INET6 socket -> the IPv4 listener, reported as plain IPv4.
    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.http4, "6", "::ffff:192.0.2.10", 80);
    assert_origin(origin, "192.0.2.10:80", env.uid, pid);
    assert_eq!(line(&out, "PEER"), Some("::ffff:192.0.2.10 80"), "{out}");

    // NAT64 form: stays IPv6 on the wire (IPv6 listener) but is the IPv4 it carries.
    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.http6, "6", "64:ff9b::c000:20a", 80);
    assert_origin(origin, "192.0.2.10:80", env.uid, pid);
    assert_eq!(line(&out, "PEER"), Some("64:ff9b::c000:20a 80"), "{out}");

    // Other ports are denied in every form, and loopback carried in 6to4/NAT64 is not loopback.
    for host in [
        "::ffff:192.0.2.10",
        "64:ff9b::c000:20a",
        "2002:c000:20a::1",
        "2002:7f00:1::1",
        "64:ff9b::7f00:1",
    ] {
        let out = env
            .spawn(Who::User, false, TCP_CLIENT, &["6", host, "8080"])
            .finish();
        assert_eq!(line(&out, "ERR"), Some("EPERM"), "[{host}]:8080: {out}");
    }
}

#[test]
fn only_tcp_and_udp_sockets_for_governed_tasks() {
    let Some(env) = Env::setup("sockcreate") else {
        return;
    };
    let l = Listeners::new();
    let icpt = env.install(&l);
    let results = |out: &str| -> Vec<(String, String)> {
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    };

    // Root outside any governed cgroup is exempt: raw and ping sockets work (private netns, where
    // ping sockets are enabled; the host's ping_group_range is left alone).
    let out = env.spawn(Who::Root, true, SOCKET_CLIENT, &[]).finish();
    let r = results(&out);
    for name in ["raw4", "raw6", "ping4", "ping6", "mptcp4"] {
        assert!(r.contains(&(name.into(), "ok".into())), "{name}: {out}");
    }

    // Root inside a governed cgroup: only TCP/UDP (root has CAP_NET_RAW and ping sockets are
    // enabled, so every denial below comes from sock_create).
    icpt.govern_cgroup(&env.cgroup, Mode::Redirect, PolicyId(7))
        .unwrap();
    let before = counters(&icpt);
    let out = env.spawn(Who::Root, true, SOCKET_CLIENT, &[]).finish();
    for (name, res) in results(&out) {
        match name.as_str() {
            "tcp4" | "udp4" | "tcp6" | "udp6" => assert_eq!(res, "ok", "{name}: {out}"),
            // SCTP may be unavailable in the kernel (EPROTONOSUPPORT); it must never be "ok".
            "sctp4" => assert_ne!(res, "ok", "{name}: {out}"),
            _ => assert_eq!(res, "EPERM", "{name}: {out}"),
        }
    }
    let denied = counters(&icpt).get(Counter::DenySockCreate) - before.get(Counter::DenySockCreate);
    assert!(denied >= 7, "DenySockCreate rose by {denied}: {out}");

    // The governed user (also via uid): nothing but TCP/UDP either.
    let out = env.spawn(Who::User, false, SOCKET_CLIENT, &[]).finish();
    for (name, res) in results(&out) {
        if !["tcp4", "udp4", "tcp6", "udp6"].contains(&name.as_str()) {
            assert_ne!(res, "ok", "{name}: {out}");
        }
    }
}

#[test]
fn root_is_not_redirected_but_governed_cgroup_is() {
    let Some(env) = Env::setup("root") else {
        return;
    };
    let l = Listeners::new();
    let icpt = env.install(&l);

    // Exempt root in a lo-only netns reaches the real 192.0.2.10 on ports 80 and 8080.
    for port in ["80", "8080"] {
        let out = env
            .spawn(Who::Root, true, NETNS_SELF_CONNECT, &[port])
            .finish();
        assert_eq!(
            line(&out, "SERVED"),
            Some(format!("192.0.2.10 {port}").as_str()),
            "{out}"
        );
    }
    // The governed user in the same setup is redirected (to 127.0.0.1 of that netns, where no
    // agent listens) or denied: it never reaches the real destination.
    let out = env
        .spawn(Who::User, true, NETNS_SELF_CONNECT, &["8080"])
        .finish();
    assert!(line(&out, "SERVED").is_none(), "{out}");
    assert_eq!(line(&out, "ERR"), Some("EPERM"), "{out}");

    // Root inside a governed cgroup is governed (setuid/root inside the subtree, T11).
    let id = icpt
        .govern_cgroup(&env.cgroup, Mode::Redirect, PolicyId(99))
        .unwrap();
    let run = env.spawn(Who::Root, false, TCP_CLIENT, &["4", "192.0.2.10", "80"]);
    let pid = run.pid();
    let (_, origin) = accept_one(&l.http4, &icpt);
    let out = run.finish();
    let o = assert_origin(origin, "192.0.2.10:80", 0, pid);
    assert_eq!(o.policy_id, PolicyId(99));
    assert_eq!(o.cgroup_id, id);
    assert_eq!(line(&out, "REPLY"), Some("OK"), "{out}");
    let out = env
        .spawn(Who::Root, false, TCP_CLIENT, &["4", "192.0.2.10", "8080"])
        .finish();
    assert_eq!(line(&out, "ERR"), Some("EPERM"), "{out}");
    icpt.ungovern_cgroup(&env.cgroup).unwrap();
}

#[test]
fn loopback_policy_and_deny_all_mode() {
    let Some(env) = Env::setup("loopback") else {
        return;
    };
    let l = Listeners::new();
    let mut cfg = env.config(&l);
    let icpt = env.install(&l);
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = local.local_addr().unwrap().port().to_string();

    // Allow (default): a direct loopback connection is not redirected (no origin recorded).
    let run = env.spawn(Who::User, false, TCP_CLIENT, &["4", "127.0.0.1", &port]);
    let (_, origin) = accept_one(&local, &icpt);
    assert!(origin.is_none());
    assert_eq!(line(&run.finish(), "REPLY"), Some("OK"));

    // Deny: loopback (v4, v6, unspecified) is refused, redirects still work.
    cfg.loopback = LoopbackPolicy::Deny;
    icpt.set_config(&cfg.to_raw().unwrap()).unwrap();
    let before = counters(&icpt);
    for (fam, host) in [
        ("4", "127.0.0.1"),
        ("4", "0.0.0.0"),
        ("6", "::1"),
        ("6", "::ffff:127.0.0.1"),
    ] {
        let out = env
            .spawn(Who::User, false, TCP_CLIENT, &[fam, host, &port])
            .finish();
        assert_eq!(line(&out, "ERR"), Some("EPERM"), "{host}: {out}");
    }
    assert!(increased(&before, &counters(&icpt), Counter::DenyLoopback));
    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.http4, "4", "192.0.2.10", 80);
    assert_origin(origin, "192.0.2.10:80", env.uid, pid);
    assert_eq!(line(&out, "REPLY"), Some("OK"), "{out}");

    // Deny-all: not even 80/443/53 are redirected.
    icpt.set_uid_policy(Uid(env.uid), Mode::DenyAll, PolicyId(1))
        .unwrap();
    assert_eq!(
        icpt.uid_policy(Uid(env.uid)).unwrap(),
        Some((Mode::DenyAll, PolicyId(1)))
    );
    let out = env
        .spawn(Who::User, false, TCP_CLIENT, &["4", "192.0.2.10", "80"])
        .finish();
    assert_eq!(line(&out, "ERR"), Some("EPERM"), "{out}");
    let out = env
        .spawn(
            Who::User,
            false,
            UDP_CLIENT,
            &["4", "8.8.8.8", "53", "sendto"],
        )
        .finish();
    assert_eq!(line(&out, "ERR"), Some("EPERM"), "{out}");
}

#[test]
fn pins_survive_drop_fail_closed_and_adopt_restores() {
    let Some(env) = Env::setup("pins") else {
        return;
    };
    let l = Listeners::new();
    let cfg = env.config(&l);
    let icpt = env.install(&l);
    assert!(is_installed(&env.pin_dir));

    // "Agent down": the handle is dropped and the HTTP listener the pinned config points at is
    // closed (a port that was bound and released again stands in for the dead agent's listener).
    drop(icpt);
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut down = cfg.clone();
    down.http_v4 = Some(v4(&dead));
    drop(dead);
    drop(Interceptor::adopt(&down).unwrap());
    assert!(
        is_installed(&env.pin_dir),
        "pins must survive dropping the Interceptor"
    );
    let out = env
        .spawn(Who::User, false, TCP_CLIENT, &["4", "192.0.2.10", "80"])
        .finish();
    assert_eq!(
        line(&out, "ERR"),
        Some("ECONNREFUSED"),
        "fail closed while the agent is down: {out}"
    );
    let out = env
        .spawn(Who::User, false, TCP_CLIENT, &["4", "192.0.2.10", "8080"])
        .finish();
    assert_eq!(line(&out, "ERR"), Some("EPERM"), "{out}");

    // Restarted agent adopts the pins (uid policy kept) and serves again.
    let icpt = Interceptor::adopt(&cfg).unwrap();
    assert_eq!(
        icpt.uid_policy(Uid(env.uid)).unwrap(),
        Some((Mode::Redirect, POLICY_ID))
    );
    let (out, origin, pid) = redirected_tcp(&env, &icpt, &l.http4, "4", "192.0.2.10", 80);
    assert_origin(origin, "192.0.2.10:80", env.uid, pid);
    assert_eq!(line(&out, "REPLY"), Some("OK"), "{out}");

    // Re-install over existing pins replaces them without leaving stale pins behind.
    let icpt2 = Interceptor::install(&cfg).unwrap();
    drop(icpt);
    icpt2
        .set_uid_policy(Uid(env.uid), Mode::Redirect, POLICY_ID)
        .unwrap();
    let (_, origin, pid) = redirected_tcp(&env, &icpt2, &l.http4, "4", "192.0.2.10", 80);
    assert_origin(origin, "192.0.2.10:80", env.uid, pid);

    icpt2.detach_and_unpin().unwrap();
    assert!(!env.pin_dir.exists());
    assert!(matches!(
        Interceptor::adopt(&cfg),
        Err(iron_agent::ebpf::InterceptError::NotInstalled { .. })
    ));
}

#[test]
fn missing_object_is_a_clear_runtime_error() {
    if object_built() {
        skip(
            "not_built",
            "this binary has the eBPF object (only checked in placeholder builds)",
        );
        return;
    }
    let err = Interceptor::install(&InterceptConfig::default()).unwrap_err();
    assert!(matches!(
        err,
        iron_agent::ebpf::InterceptError::ObjectNotBuilt
    ));
    assert_eq!(
        err.to_string(),
        "eBPF object not built: install rust-src for nightly, llvm-22-dev and bpf-linker (cargo xtask setup)"
    );
}

/// 16 concurrent clients, 20 connections each: every accepted connection finds its origin (the
/// sock_ops entry is written before the client's final ACK, so it exists when accept() returns).
const STRESS_CLIENT: &str = r#"
import socket, sys, threading
per = int(sys.argv[1]); done = [0]; lock = threading.Lock()
def worker():
    for _ in range(per):
        s = socket.create_connection(("192.0.2.10", 80), timeout=10)
        s.sendall(b"x"); s.recv(10); s.close()
        with lock: done[0] += 1
ts = [threading.Thread(target=worker) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
print("DONE", done[0])
"#;

#[test]
fn lookup_finds_every_concurrent_connection() {
    let Some(env) = Env::setup("stress") else {
        return;
    };
    let l = Listeners::new();
    let icpt = env.install(&l);
    let per = 20;
    let total = 16 * per;
    let run = env.spawn(Who::User, false, STRESS_CLIENT, &[&per.to_string()]);
    let pid = run.pid();
    let mut found = 0;
    for _ in 0..total {
        let (_, origin) = accept_one(&l.http4, &icpt);
        if let Some(o) = origin {
            assert_eq!(
                (o.orig_dst, o.uid, o.pid),
                ("192.0.2.10:80".parse().unwrap(), Uid(env.uid), pid)
            );
            found += 1;
        }
    }
    let out = run.finish();
    assert_eq!(
        line(&out, "DONE"),
        Some(total.to_string().as_str()),
        "{out}"
    );
    assert_eq!(found, total, "lookups that found their origin");
    let mode = std::fs::metadata(&env.pin_dir).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "pin dir must be private to the agent");
}
