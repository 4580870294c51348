//! The kernel boundary around governed workloads (issue 11 items 3, 4, 6, 7, 10, 12): what a
//! hostile unprivileged (or root-but-governed) workload tries beyond connect(), each shown to
//! work without the agent (control) and to be refused with it. Root only. The LSM-based parts
//! are checked where the agent reports the BPF LSM usable; elsewhere the tests check that the
//! agent says which protections are off (and a `SKIP` line names what was not exercised).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use iron_agent_tests::agent::{TEST_LSM_OFF, agent_bin, test_lsm_off_honoured};
use iron_agent_tests::config::AgentConfig;
use iron_agent_tests::ebpf_world::{PIN_DIR, Unpin, World, py, py_as_root};
use iron_agent_tests::netns::{TestCgroup, TestUser, output_text};
use iron_agent_tests::{Agent, KillOnDrop, TestCa};

const WHY: &str = "eBPF and BPF LSM programs, test users, cgroups";

/// `python3 -c`: bind (and listen on) `addr:port` for `family` ("4"/"6"), print `ok` or errno.
fn py_bind(family: &str, addr: &str, port: u16, listen: bool) -> String {
    let fam = if family == "6" { "AF_INET6" } else { "AF_INET" };
    format!(
        "import socket,errno\ns=socket.socket(socket.{fam},socket.SOCK_STREAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ntry:\n  s.bind(('{addr}',{port}))\n  {}\n  print('ok')\nexcept OSError as e:\n  print(errno.errorcode.get(e.errno,str(e)))",
        if listen { "s.listen(1)" } else { "pass" }
    )
}

/// listen() on a socket never bound: the kernel autobinds it to the wildcard address.
const PY_LISTEN_UNBOUND: &str = "import socket,errno\ns=socket.socket()\ntry:\n  s.listen(1); print('ok')\nexcept OSError as e: print(errno.errorcode[e.errno])";

/// The routing options a governed socket must not set: IPv4 source-route options (NOPs here,
/// enough to show the option is accepted) and an IPv6 segment routing header with one segment.
const PY_ROUTING: &str = r#"
import socket,errno,struct
def t(fam,lvl,opt,val):
  s=socket.socket(fam,socket.SOCK_DGRAM)
  try:
    s.setsockopt(lvl,opt,val); return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
srh=struct.pack('BBBBBBH',17,2,4,0,0,0,0)+socket.inet_pton(socket.AF_INET6,'fd31::2')
print(t(socket.AF_INET,socket.IPPROTO_IP,socket.IP_OPTIONS,b'\x01\x01\x01\x01'),
      t(socket.AF_INET6,socket.IPPROTO_IPV6,57,srh),
      t(socket.AF_INET6,socket.IPPROTO_IPV6,57,b''),
      t(socket.AF_INET,socket.IPPROTO_IP,socket.IP_TOS,b'\x10'))
"#;

/// IPv4 options attached to one packet (`IP_RETOPTS` ancillary data), then the same packet
/// without them; to a loopback port nobody listens on (UDP send succeeds either way).
const PY_PACKET_OPTIONS: &str = r#"
import socket,errno
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
def t(cmsg):
  try:
    s.sendmsg([b'x'],cmsg,0,('127.0.0.1',9)); return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
print(t([(socket.IPPROTO_IP,7,b'\x01\x01\x01\x01')]), t([]))
"#;

/// Socket families: generic netlink and AF_VSOCK (both creatable without privileges), then the
/// families that stay allowed.
const PY_FAMILIES: &str = r#"
import socket,errno
def t(*a):
  try:
    socket.socket(*a).close(); return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
print(t(socket.AF_NETLINK,socket.SOCK_RAW,16), t(40,socket.SOCK_STREAM,0),
      t(socket.AF_UNIX,socket.SOCK_STREAM,0), t(socket.AF_NETLINK,socket.SOCK_RAW,0),
      t(socket.AF_INET6,socket.SOCK_STREAM,0))
"#;

fn py_unix_connect(path: &str) -> String {
    let addr = match path.strip_prefix('@') {
        Some(n) => format!("'\\0{n}'"),
        None => format!("'{path}'"),
    };
    format!(
        "import socket,errno\ns=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\ntry:\n  s.connect({addr}); print('ok')\nexcept OSError as e: print(errno.errorcode[e.errno])"
    )
}

fn py_unix_sendto(path: &str) -> String {
    format!(
        "import socket,errno\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ntry:\n  s.sendto(b'x','{path}'); print('ok')\nexcept OSError as e: print(errno.errorcode[e.errno])"
    )
}

fn harden_config(world: &World, mitm: &TestCa, extra: serde_json::Value) -> AgentConfig {
    let mut cfg = world.config(mitm);
    let i = cfg.intercept.as_mut().unwrap();
    for (k, v) in extra.as_object().unwrap() {
        i[k] = v.clone();
    }
    cfg
}

/// Whether the agent attached its LSM programs (it logs when it could not).
fn lsm_on(agent: &Agent) -> bool {
    !agent.logs().contains("BPF LSM not available")
}

fn skip_lsm(what: &str) {
    let line =
        format!("SKIP {what}: the BPF LSM cannot be used on this host (see the agent's log)");
    println!("{line}");
    eprintln!("{line}");
}

/// `iron-agent status --json` for the agent's config.
fn status(agent: &Agent) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .args(["status", "--json", "--config"])
        .arg(&agent.config_path)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn inbound_listeners_are_loopback_only_and_agent_ports_cannot_be_squatted() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("harden MITM CA");

    // Control: without the agent the workload can serve on every address.
    assert_eq!(py(&u1, &py_bind("4", "0.0.0.0", 18080, true)), "ok");
    assert_eq!(py(&u1, PY_LISTEN_UNBOUND), "ok");

    let cfg = harden_config(&world, &mitm, json!({"inbound_ports": [18090]}));
    let mut agent = world.start_agent(&cfg);
    for (fam, addr) in [
        ("4", "0.0.0.0"),
        ("4", "10.231.0.1"),
        ("6", "::"),
        ("6", "::ffff:0.0.0.0"),
    ] {
        assert_eq!(py(&u1, &py_bind(fam, addr, 18080, true)), "EPERM", "{addr}");
    }
    // listen() without bind would autobind to the wildcard address: refused by the LSM.
    if lsm_on(&agent) {
        assert_eq!(py(&u1, PY_LISTEN_UNBOUND), "EPERM");
    } else {
        skip_lsm("listen() on an unbound socket");
    }
    // Loopback stays usable, and so does an allowed inbound port.
    assert_eq!(py(&u1, &py_bind("4", "127.0.0.1", 18080, true)), "ok");
    assert_eq!(py(&u1, &py_bind("6", "::1", 18080, true)), "ok");
    assert_eq!(py(&u1, &py_bind("4", "0.0.0.0", 18090, true)), "ok");
    // Exempt root is untouched.
    assert_eq!(py_as_root(&py_bind("4", "0.0.0.0", 18080, true)), "ok");
    // The hardening programs' denials are on /metrics with the interception ones: the four
    // binds above (bind4/bind6), the unbound listen when the LSM is on.
    let m = crate::metrics::scrape_metrics_blocking(agent.addr("metrics"));
    let bind = m.value(r#"iron_agent_ebpf_denials_total{reason="bind"}"#);
    assert!(bind.is_some_and(|v| v >= 4.0), "{}", m.text);
    if lsm_on(&agent) {
        let listen = m.value(r#"iron_agent_ebpf_denials_total{reason="listen"}"#);
        assert!(listen.is_some_and(|v| v >= 1.0), "{}", m.text);
    }
    assert!(
        m.value(r#"iron_agent_ebpf_denials_total{reason="ptrace"}"#)
            .is_some(),
        "{}",
        m.text
    );

    // Squatting: while the agent is down its redirect targets stay reserved.
    let https = agent.addr("https").port();
    let dns = agent.addr("dns").port();
    let metrics = agent.addr("metrics").port();
    agent.signal(libc::SIGKILL);
    assert_eq!(py(&u1, &py_bind("4", "127.0.0.1", https, true)), "EPERM");
    // Not only redirect targets: the metrics (and management) listener too.
    assert_eq!(py(&u1, &py_bind("4", "127.0.0.1", metrics, true)), "EPERM");
    assert_eq!(py(&u1, &py_bind("6", "::", https, false)), "EPERM");
    let udp = format!(
        "import socket,errno\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ntry:\n  s.bind(('127.0.0.1',{dns})); print('ok')\nexcept OSError as e: print(errno.errorcode[e.errno])"
    );
    assert_eq!(py(&u1, &udp), "EPERM");
}

#[test]
fn routing_options_and_foreign_socket_families_are_refused() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("harden MITM CA");

    // Control: every option and family is available to an ordinary user without the agent.
    assert_eq!(py(&u1, PY_ROUTING), "ok ok ok ok");
    assert_eq!(py(&u1, PY_PACKET_OPTIONS), "ok ok");
    assert_eq!(py(&u1, PY_FAMILIES), "ok ok ok ok ok");

    let agent = world.start_agent(&harden_config(&world, &mitm, json!({})));
    // IP options and IPv6 routing headers (even clearing one) are refused; harmless options not.
    assert_eq!(py(&u1, PY_ROUTING), "EPERM EPERM EPERM ok");
    // Per-packet options (no setsockopt involved) are dropped on egress: the send fails.
    assert_eq!(py(&u1, PY_PACKET_OPTIONS), "EPERM ok");
    // Generic netlink and AF_VSOCK refused; unix, netlink route and inet allowed.
    if lsm_on(&agent) {
        assert_eq!(py(&u1, PY_FAMILIES), "EPERM EPERM ok ok ok");
    } else {
        skip_lsm("socket families");
    }
    // Root (exempt) keeps both.
    assert_eq!(py_as_root(PY_ROUTING), "ok ok ok ok");
    assert_eq!(py_as_root(PY_PACKET_OPTIONS), "ok ok");
    assert_eq!(py_as_root(PY_FAMILIES), "ok ok ok ok ok");
    drop(agent);
}

/// As root (who may set hop-by-hop and destination options at all): IPV6_HOPOPTS and
/// IPV6_DSTOPTS by setsockopt, the same and an IPV6_RTHDR routing header (type 2, one address)
/// as ancillary data of one packet, a plain packet, then an AF_PACKET socket.
const PY_ROOT_EXTENSIONS: &str = r#"
import socket,errno
def t(f):
  try:
    f(); return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
opt=b'\x00\x00\x01\x04\x00\x00\x00\x00'
rth=bytes([0,2,2,1,0,0,0,0])+socket.inet_pton(socket.AF_INET6,'::1')
def so(name):
  socket.socket(socket.AF_INET6,socket.SOCK_DGRAM).setsockopt(socket.IPPROTO_IPV6,name,opt)
def cm(anc):
  socket.socket(socket.AF_INET6,socket.SOCK_DGRAM).sendmsg([b'x'],anc,0,('::1',9))
print(t(lambda: so(54)), t(lambda: so(59)), t(lambda: cm([(socket.IPPROTO_IPV6,54,opt)])),
      t(lambda: cm([(socket.IPPROTO_IPV6,59,opt)])), t(lambda: cm([(socket.IPPROTO_IPV6,57,rth)])),
      t(lambda: cm([])), t(lambda: socket.socket(socket.AF_PACKET,socket.SOCK_RAW,0).close()))
"#;

#[test]
fn governed_root_cannot_set_ipv6_extension_headers_or_open_packet_sockets() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let mitm = TestCa::new("harden MITM CA");
    let cg = TestCgroup::create("iatest-harden-ext");
    let fields = |s: String| s.split(' ').map(str::to_string).collect::<Vec<_>>();

    // Control: root in the cgroup, without the agent, has every option and AF_PACKET. The
    // kernel itself refuses a routing header as ancillary data unless it supports Mobile IPv6.
    let control = fields(cg.py_as_root(PY_ROOT_EXTENSIONS));
    assert_eq!(control.len(), 7, "{control:?}");
    let rthdr = control[4].clone();
    assert!(rthdr == "ok" || rthdr == "EINVAL", "{control:?}");
    let mut all_ok = control.clone();
    all_ok[4] = "ok".into();
    assert!(all_ok.iter().all(|f| f == "ok"), "{control:?}");

    let cfg = harden_config(
        &world,
        &mitm,
        json!({"governed": {"users": ["iatest1"], "cgroups": [cg.path.to_string_lossy()]}}),
    );
    let agent = world.start_agent(&cfg);
    let got = fields(cg.py_as_root(PY_ROOT_EXTENSIONS));
    // Sticky options refused by setsockopt, per-packet ones dropped on egress (the send fails),
    // the routing header too where the kernel accepts it; a plain packet still goes.
    let rthdr_now = if rthdr == "ok" { "EPERM" } else { "EINVAL" };
    assert_eq!(
        got[..6],
        ["EPERM", "EPERM", "EPERM", "EPERM", rthdr_now, "ok"],
        "{got:?}"
    );
    if lsm_on(&agent) {
        assert_eq!(got[6], "EPERM", "AF_PACKET: {got:?}");
    } else {
        skip_lsm("AF_PACKET as governed root");
    }
    // Exempt root outside the cgroup keeps all of it.
    assert_eq!(fields(py_as_root(PY_ROOT_EXTENSIONS)), control);
    drop(agent);
}

/// A unix socket at a fixed system path (where a local resolver's would be), made only when
/// nothing is there; removed on drop with the directories made for it. It accepts and closes
/// every connection at once: glibc asks an nscd socket on every user or host lookup on the
/// machine, and a listener that never answered would stall them all.
struct SocketAt {
    path: PathBuf,
    made_dirs: Vec<PathBuf>,
    server: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl SocketAt {
    fn bind(path: &str) -> SocketAt {
        let path = PathBuf::from(path);
        if std::fs::symlink_metadata(&path).is_ok() {
            return SocketAt {
                path,
                made_dirs: Vec::new(),
                server: None,
            };
        }
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        for d in &missing {
            std::fs::create_dir(d).unwrap();
            chmod(d, 0o755);
        }
        let listener = UnixListener::bind(&path).unwrap();
        chmod(&path, 0o777);
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SocketAt {
            path,
            made_dirs: missing,
            server: Some((stop, thread)),
        }
    }

    fn made(&self) -> bool {
        self.server.is_some()
    }

    fn s(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for SocketAt {
    fn drop(&mut self) {
        let Some((stop, thread)) = self.server.take() else {
            return;
        };
        let _ = std::fs::remove_file(&self.path);
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        for d in self.made_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn local_resolver_sockets_are_not_in_the_default_unix_allowlist() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("harden MITM CA");
    // nscd and the D-Bus system bus (systemd-resolved answers there): stand-ins where absent.
    let nscd = SocketAt::bind("/run/nscd/socket");
    let bus = SocketAt::bind("/run/dbus/system_bus_socket");
    for sock in [&nscd, &bus] {
        let control = py(&u1, &py_unix_connect(&sock.s()));
        if sock.made() {
            assert_eq!(control, "ok", "{}", sock.s());
        } else {
            assert_ne!(control, "EPERM", "{}", sock.s());
        }
    }

    // No unix_allow in the config: the default list.
    let agent = world.start_agent(&harden_config(&world, &mitm, json!({})));
    let on = lsm_on(&agent);
    if on {
        assert_eq!(py(&u1, &py_unix_connect(&nscd.s())), "EPERM");
        assert_eq!(py(&u1, &py_unix_connect(&bus.s())), "EPERM");
    } else {
        skip_lsm("unix socket allowlist (local resolvers)");
    }
    drop(agent);

    // Listing the bus gives it back (and check-config says what that opens); nscd stays shut.
    let cfg = harden_config(&world, &mitm, json!({"unix_allow": ["/dev/log", bus.s()]}));
    let agent = world.start_agent(&cfg);
    assert_ne!(py(&u1, &py_unix_connect(&bus.s())), "EPERM");
    if on {
        assert_eq!(py(&u1, &py_unix_connect(&nscd.s())), "EPERM");
    }
    let check = Command::new(agent_bin())
        .args(["check-config", "--no-host-checks", "--config"])
        .arg(&agent.config_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("warning: intercept.unix_allow[1]: /run/dbus/system_bus_socket lets governed tasks resolve names"),
        "{err}"
    );
    drop(agent);
}

#[test]
fn unix_sockets_outside_the_allowlist_are_refused() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("harden MITM CA");
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    // A stand-in for a container runtime socket, an allowed service socket, a datagram socket
    // and abstract names, all reachable by anyone as far as file permissions go.
    let runtime = dir.path().join("docker.sock");
    let allowed = dir.path().join("allowed.sock");
    let dgram = dir.path().join("log.sock");
    let _l1 = UnixListener::bind(&runtime).unwrap();
    let _l2 = UnixListener::bind(&allowed).unwrap();
    let _d = UnixDatagram::bind(&dgram).unwrap();
    for p in [&runtime, &allowed, &dgram] {
        chmod(p, 0o777);
    }
    let link = dir.path().join("innocent.sock");
    std::os::unix::fs::symlink(&runtime, &link).unwrap();
    let abs_ok = abstract_listener("iatest-harden-ok");
    let abs_no = abstract_listener("iatest-harden-no");
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();

    // Control: without the agent every one of them is reachable.
    assert_eq!(py(&u1, &py_unix_connect(&s(&runtime))), "ok");
    assert_eq!(py(&u1, &py_unix_connect("@iatest-harden-no")), "ok");
    assert_eq!(py(&u1, &py_unix_sendto(&s(&dgram))), "ok");

    let cfg = harden_config(
        &world,
        &mitm,
        json!({"unix_allow": [s(&allowed), "@iatest-harden-ok"]}),
    );
    let agent = world.start_agent(&cfg);
    if !lsm_on(&agent) {
        skip_lsm("unix socket allowlist");
        return;
    }
    assert_eq!(py(&u1, &py_unix_connect(&s(&runtime))), "EPERM");
    // A symlink or relative path to it is not on the list either.
    assert_eq!(py(&u1, &py_unix_connect(&s(&link))), "EPERM");
    let rel = format!(
        "import os\nos.chdir('{}')\n{}",
        s(&dir.path().to_path_buf()),
        py_unix_connect("docker.sock")
    );
    assert_eq!(py(&u1, &rel), "EPERM");
    assert_eq!(py(&u1, &py_unix_sendto(&s(&dgram))), "EPERM");
    assert_eq!(py(&u1, &py_unix_connect("@iatest-harden-no")), "EPERM");
    // Listed sockets work.
    assert_eq!(py(&u1, &py_unix_connect(&s(&allowed))), "ok");
    assert_eq!(py(&u1, &py_unix_connect("@iatest-harden-ok")), "ok");
    // Root (exempt) is not restricted.
    assert_eq!(py_as_root(&py_unix_connect(&s(&runtime))), "ok");
    drop((abs_ok, abs_no));
}

#[test]
fn governed_root_cannot_reach_into_the_agent() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let mitm = TestCa::new("harden MITM CA");
    // Root inside a governed cgroup: ordinary permissions allow it everything, so only the
    // LSM stands between it and the agent.
    let cg = TestCgroup::create("iatest-harden");
    let cfg = harden_config(
        &world,
        &mitm,
        json!({"governed": {"users": ["iatest1"], "cgroups": [cg.path.to_string_lossy()]}}),
    );
    let probe = |pid: u32| {
        format!(
            r#"
import ctypes,errno,os
def rd(p):
  try:
    open(p,'rb').close(); return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
libc=ctypes.CDLL(None,use_errno=True)
r=libc.ptrace(16,{pid},0,0)
pt='ok' if r==0 else errno.errorcode[ctypes.get_errno()]
if r==0:
  os.waitpid({pid},0); libc.ptrace(17,{pid},0,0)
b=libc.syscall(321,12,None,0)
bp='EPERM' if b<0 and ctypes.get_errno()==errno.EPERM else 'ok'
print(rd('/proc/{pid}/environ'), rd('/proc/{pid}/mem'), pt, bp)
"#
        )
    };
    // Control: a sleeping root process in the same cgroup, without the agent, is open to it.
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    assert_eq!(cg.py_as_root(&probe(victim.id())), "ok ok ok ok");
    let _ = victim.kill();
    let _ = victim.wait();

    let agent = world.start_agent(&cfg);
    if !lsm_on(&agent) {
        skip_lsm("self-protection");
        return;
    }
    assert_eq!(
        cg.py_as_root(&probe(agent.pid())),
        "EPERM EPERM EPERM EPERM"
    );
    // Exempt root outside the cgroup still can (the protection is for governed tasks only).
    assert_eq!(py_as_root(&probe(agent.pid())), "ok ok ok ok");
    drop(agent);
}

/// DNS over TCP to `server`: prints `rcode answers first-A peer`, or the errno name.
const PY_DNS_TCP: &str = r#"
import socket,struct,sys,errno
server,name=sys.argv[1],sys.argv[2]
q=struct.pack('>HHHHHH',0x4242,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in name.split('.'))+b'\x00'+struct.pack('>HH',1,1)
s=socket.socket(); s.settimeout(5)
try:
  s.connect((server,53))
except OSError as e:
  print(errno.errorcode[e.errno]); sys.exit()
s.sendall(struct.pack('>H',len(q))+q)
n=struct.unpack('>H',s.recv(2))[0]; d=b''
while len(d)<n: d+=s.recv(n-len(d))
an=struct.unpack('>H',d[6:8])[0]
ip='.'.join(str(b) for b in d[-4:]) if an else '-'
print(d[3]&15, an, ip, s.getpeername()[0])
"#;

/// A "local resolver" on 127.0.0.1:53 (TCP) that answers every A query with 192.0.2.99: the
/// leak a governed workload would use to resolve names no policy allows.
const PY_LEAKY_RESOLVER: &str = r#"
import socket,struct
l=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
l.bind(('127.0.0.1',53)); l.listen(8); print('ready',flush=True)
while True:
  c,_=l.accept(); n=struct.unpack('>H',c.recv(2))[0]; q=c.recv(n)
  r=q[:2]+b'\x81\x80'+q[4:6]+b'\x00\x01\x00\x00\x00\x00'+q[12:]+b'\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04'+bytes([192,0,2,99])
  c.sendall(struct.pack('>H',len(r))+r); c.close()
"#;

#[test]
fn dns_over_tcp_goes_to_the_agent_and_dot_stays_denied() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("harden MITM CA");
    let mut resolver = KillOnDrop(
        Command::new("/usr/bin/python3")
            .args(["-c", PY_LEAKY_RESOLVER])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(resolver.0.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let q = |server: &str, name: &str| {
        output_text(&u1.run(&["/usr/bin/python3", "-c", PY_DNS_TCP, server, name]))
    };
    // Control: without the agent the local resolver answers any name.
    assert_eq!(q("127.0.0.1", "leak.test"), "0 1 192.0.2.99 127.0.0.1");

    let agent = world.start_agent(&world.config(&mitm));
    // Now the same query is answered by the agent: names no policy allows do not resolve.
    assert_eq!(q("127.0.0.1", "leak.test"), "3 0 - 127.0.0.1");
    assert_eq!(q("127.0.0.1", "api.test"), "0 1 10.231.0.2 127.0.0.1");
    // Any resolver address works the same way, and the peer still looks like the resolver.
    assert_eq!(q("8.8.8.8", "api.test"), "0 1 10.231.0.2 8.8.8.8");
    assert_eq!(q("8.8.8.8", "leak.test"), "3 0 - 8.8.8.8");
    // DNS over TLS stays denied.
    assert_eq!(
        py(
            &u1,
            &iron_agent_tests::netns::py_connect("10.231.0.2:853".parse().unwrap())
        ),
        "EPERM"
    );
    // Root (exempt) still reaches the local resolver.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PY_DNS_TCP, "127.0.0.1", "leak.test"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 1 192.0.2.99 127.0.0.1"
    );
    drop(resolver);
    drop(agent);
}

/// `iron-agent status` for the agent's config: (JSON, human-readable).
fn status_both(agent: &Agent) -> (serde_json::Value, String) {
    let human = Command::new(agent_bin())
        .args(["status", "--config"])
        .arg(&agent.config_path)
        .output()
        .unwrap();
    (
        status(agent),
        String::from_utf8_lossy(&human.stdout).into_owned(),
    )
}

/// What `status` says about the hardening programs matches `lsm` (whether the LSM programs are
/// attached): the cgroup ones always attached, the LSM ones exactly when `lsm`; each
/// interception program listed by name.
fn assert_status_programs(st: &serde_json::Value, human: &str, lsm: bool) {
    assert_eq!(st["attached"], true, "{st:#}");
    let programs = st["hardening"]["programs"].as_array().unwrap();
    for p in programs {
        let lsm_prog = p["hook"].as_str().unwrap().starts_with("lsm ");
        assert_eq!(p["pinned"], !lsm_prog || lsm, "{p}");
    }
    assert!(
        programs
            .iter()
            .any(|p| p["program"] == "iron_lsm_socket_create")
    );
    assert_eq!(st["lsm"]["active"], lsm, "{st:#}");
    assert_eq!(st["lsm"]["source"], "pins", "{st:#}");
    for (name, hook) in [
        ("iron_sock_create", "cgroup sock_create"),
        ("iron_connect4", "cgroup connect4"),
        ("iron_sendmsg6", "cgroup sendmsg6"),
        ("iron_sock_ops", "cgroup sock_ops"),
    ] {
        assert!(
            human.contains(&format!("intercept    {name} ({hook}): attached\n")),
            "{human}"
        );
    }
    assert!(
        human.contains("iron_setsockopt (cgroup setsockopt): attached"),
        "{human}"
    );
    let lsm_state = if lsm { "attached" } else { "not attached" };
    assert!(
        human.contains(&format!("iron_lsm_bpf (lsm bpf): {lsm_state}\n")),
        "{human}"
    );
    if lsm {
        assert!(
            human.contains("bpf lsm      active (LSM programs attached)"),
            "{human}"
        );
    } else {
        assert!(
            st["lsm"]["off"]
                .as_str()
                .unwrap()
                .contains("self-protection"),
            "{st:#}"
        );
        assert!(
            human.contains("bpf lsm      inactive: ") && human.contains("protections off: "),
            "{human}"
        );
    }
}

#[test]
fn lsm_state_is_reported_and_require_lsm_is_enforced() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let mitm = TestCa::new("harden MITM CA");
    let cfg = harden_config(&world, &mitm, json!({}));
    let agent = world.start_agent(&cfg);
    let on = lsm_on(&agent);
    let (st, human) = status_both(&agent);
    assert_status_programs(&st, &human, on);
    drop(agent);

    // require_lsm: starts normally where the LSM is usable, refuses to start otherwise.
    let strict = harden_config(&world, &mitm, json!({"require_lsm": true}));
    let mut agent = world.agent(&strict).start();
    if on {
        assert!(
            agent.logs().contains("eBPF interception attached"),
            "{}",
            agent.logs()
        );
        let (st, human) = status_both(&agent);
        assert_status_programs(&st, &human, true);
    } else {
        assert!(!agent.wait_exit(Duration::from_secs(20)).success());
        assert!(
            agent.logs().contains("intercept.require_lsm"),
            "{}",
            agent.logs()
        );
    }
    drop(agent);

    // The LSM unusable (forced in this debug build): the agent says at startup which
    // protections are off, and status reads the same from the pins. A fresh installation, so
    // the LSM links pinned above are not adopted.
    Unpin::fresh();
    let agent = world.agent(&cfg).env(TEST_LSM_OFF, "1").start_attached();
    if !test_lsm_off_honoured(&agent.logs()) {
        println!("SKIP the LSM-off paths: {TEST_LSM_OFF} is ignored by this (release) build");
        return;
    }
    assert!(
        agent
            .logs()
            .contains("BPF LSM not available: these protections are off"),
        "{}",
        agent.logs()
    );
    assert!(agent.logs().contains("socket families"), "{}", agent.logs());
    let (st, human) = status_both(&agent);
    assert_status_programs(&st, &human, false);
    drop(agent);

    // ... and with require_lsm it refuses to start, leaving nothing attached.
    Unpin::fresh();
    let mut agent = world.agent(&strict).env(TEST_LSM_OFF, "1").start();
    let exit = agent.wait_exit(Duration::from_secs(20));
    assert!(!exit.success(), "{}", agent.logs());
    assert!(
        agent.logs().contains("intercept.require_lsm"),
        "{}",
        agent.logs()
    );
    assert!(!Path::new(PIN_DIR).join("links/iron_connect4").exists());
    drop(agent);
}

/// Opens each path in argv (a directory is listed, which opens it) and prints `ok` or the
/// errno name for each.
const PY_OPEN: &str = r#"
import sys,os,errno
def rd(p):
  try:
    if os.path.isdir(p): os.listdir(p)
    else: open(p,'rb').close()
    return 'ok'
  except OSError as e: return errno.errorcode[e.errno]
print(' '.join(rd(p) for p in sys.argv[1:]))
"#;

#[test]
fn governed_tasks_cannot_open_the_ca_key_or_the_state_directory() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("harden MITM CA");
    let mut cfg = harden_config(&world, &mitm, json!({}));
    // The CA lives in the world's shared temp dir (not dedicated to the agent): only the key
    // file is protected, its neighbours stay readable. Ordinary permissions let the governed
    // user read every file below, so only the LSM can refuse.
    let key = cfg.tls.ca_key.clone().unwrap();
    let cert = world.mitm_ca();
    let neighbour = world.origin_ca();
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let state = base.path().join("iron-agent");
    std::fs::create_dir_all(state.join("sub")).unwrap();
    let token = state.join("token");
    let deep = state.join("sub/deep.txt");
    let link = base.path().join("key-link");
    std::fs::hard_link(&key, &link).unwrap();
    for f in [&token, &deep] {
        std::fs::write(f, "state").unwrap();
    }
    for p in [&state, &state.join("sub"), base.path()] {
        chmod(p, 0o755);
    }
    for f in [&key, &cert, &token, &deep] {
        chmod(f, 0o644);
    }
    let later = state.join("later.txt");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let probe = |who: Option<&TestUser>| {
        let paths = [
            &key, &link, &state, &token, &deep, &later, &cert, &neighbour,
        ];
        let mut args = vec!["/usr/bin/python3".to_string(), "-c".into(), PY_OPEN.into()];
        args.extend(paths.iter().map(|p| s(p)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match who {
            Some(u) => output_text(&u.run(&args)),
            None => output_text(&Command::new(args[0]).args(&args[1..]).output().unwrap()),
        }
    };
    std::fs::write(&later, "state").unwrap();
    chmod(&later, 0o644);
    // Control: without the agent the governed user can read all of it.
    assert_eq!(probe(Some(&u1)), "ok ok ok ok ok ok ok ok");
    std::fs::remove_file(&later).unwrap();

    let agent = world
        .agent(&cfg)
        .env("IRON_AGENT_STATE_DIR", s(&state))
        .start_attached();
    if !lsm_on(&agent) {
        skip_lsm("file_open self-protection");
        return;
    }
    assert!(
        agent
            .logs()
            .contains("self-protection: governed tasks cannot open these"),
        "{}",
        agent.logs()
    );
    // A file created in the state directory after start is covered through its parent.
    std::fs::write(&later, "state").unwrap();
    chmod(&later, 0o644);
    // The key (by any name: the hard link is the same inode), the state directory and what is
    // in it are refused; the CA certificate and unrelated files are not.
    assert_eq!(
        probe(Some(&u1)),
        "EPERM EPERM EPERM EPERM EPERM EPERM ok ok"
    );
    // Exempt root is not restricted.
    assert_eq!(probe(None), "ok ok ok ok ok ok ok ok");
    let st = status(&agent);
    let denied = st["hardening"]["counters"]["DenyFileOpen"]
        .as_u64()
        .unwrap();
    assert!(denied >= 6, "{st:#}");
    assert!(
        st["hardening"]["protected_inodes"].as_u64().unwrap() >= 5,
        "{st:#}"
    );
    drop(agent);

    // Control with the agent: self_protect off leaves the same opens to ordinary permissions.
    cfg.intercept.as_mut().unwrap()["self_protect"] = json!(false);
    let agent = world
        .agent(&cfg)
        .env("IRON_AGENT_STATE_DIR", s(&state))
        .start_attached();
    assert_eq!(probe(Some(&u1)), "ok ok ok ok ok ok ok ok");
    drop(agent);
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn abstract_listener(name: &str) -> UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    UnixListener::bind_addr(&addr).unwrap()
}
