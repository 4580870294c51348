//! eBPF interception end to end, as root: governed test users with no proxy settings and no DNS
//! changes reach "remote" hosts that live in a network namespace, through the real agent.
//! Nothing leaves the machine: every address is on loopback or inside our own namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::TestCa;
use iron_agent_tests::ebpf_world::{API_KEY, World, curl, py, py_as_root};
use iron_agent_tests::netns::{TestUser, output_text, py_connect};

/// Why these tests need root.
const WHY: &str = "eBPF programs, test users, a network namespace";

const DNS_QUERY: &str = r#"
import socket,struct,sys
name=sys.argv[1]; qtype=int(sys.argv[2])
q=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in name.split('.'))+b'\x00'+struct.pack('>HH',qtype,1)
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(q,('8.8.8.8',53))
d,src=s.recvfrom(4096)
rcode=d[3]&15; an=struct.unpack('>H',d[6:8])[0]
ip=''
if an and qtype==1: ip='.'.join(str(b) for b in d[-4:])
print(src[0], src[1], rcode, an, ip)
"#;

fn dns_via_outside_resolver(user: &TestUser, name: &str) -> String {
    output_text(&user.run(&["/usr/bin/python3", "-c", DNS_QUERY, name, "1"]))
}

#[test]
fn governed_users_under_policy_end_to_end() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("e2e MITM CA");
    let agent = world.start_agent(&world.config(&mitm));
    let ca = world.mitm_ca();

    // An allowlisted HTTPS host, resolved through whatever resolver the system names: works, and
    // the upstream sees the injected credential.
    let (rc, code, out) = curl(&u1, &ca, &["-4"], "https://api.test/hello");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert!(out.contains(API_KEY), "credential not injected: {out}");
    let a = agent.audit_where(|a| a["path"] == "/hello");
    assert_eq!(a["uid"], u1.uid);
    assert_eq!(a["user"], "iatest1");
    assert_eq!(a["comm"], "curl");
    assert!(a["pid"].as_u64().unwrap() > 0);
    assert_eq!(a["orig_dst"], "10.231.0.2:443");
    assert_eq!(a["action"], "allow");

    // A host the policy denies (connecting to its real address): 403.
    let (_, code, out) = curl(
        &u1,
        &ca,
        &["--resolve", "denied.test:443:10.231.0.2"],
        "https://denied.test/d",
    );
    assert_eq!(code, "403", "{out}");
    // A hard-coded IP of a host that is not allowed: no SNI, judged by the address: 403.
    let (_, code, out) = curl(&u1, &ca, &[], "https://10.231.0.3/ip");
    assert_eq!(code, "403", "{out}");
    // An allowed SNI sent to an address that is not that host's: refused as a mismatch.
    let (_, code, out) = curl(
        &u1,
        &ca,
        &["--resolve", "api.test:443:10.231.0.3"],
        "https://api.test/front",
    );
    assert_eq!(code, "403", "{out}");
    let a = agent.audit_where(|a| a["path"] == "/front");
    assert_eq!(a["reason"], "destination_mismatch");
    assert_eq!(a["orig_dst"], "10.231.0.3:443");

    // Other TCP ports, IPv6 and IPv4-mapped forms: EPERM.
    for dst in [
        "10.231.0.2:8080",
        "[fd31::2]:8080",
        "[::ffff:10.231.0.2]:8080",
    ] {
        assert_eq!(py(&u1, &py_connect(dst.parse().unwrap())), "EPERM", "{dst}");
    }
    // Non-DNS UDP: EPERM.
    let udp = py(
        &u1,
        "import socket,errno\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ntry:\n  s.sendto(b'x',('10.231.0.2',9999)); print('sent')\nexcept OSError as e: print(errno.errorcode[e.errno])",
    );
    assert_eq!(udp, "EPERM");
    // A query to an outside resolver is answered by the agent (8.8.8.8 is unreachable from here),
    // with the reply appearing to come from 8.8.8.8:53; names no policy allows are NXDOMAIN.
    assert_eq!(
        dns_via_outside_resolver(&u1, "api.test"),
        "8.8.8.8 53 0 1 10.231.0.2"
    );
    assert_eq!(
        dns_via_outside_resolver(&u1, "denied.test"),
        "8.8.8.8 53 3 0"
    );
    // Raw and ICMP sockets cannot be created (ping sockets opened to everyone for this check).
    let old = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
    let socks = py(
        &u1,
        "import socket,errno\nfor t,p in ((socket.SOCK_RAW,socket.IPPROTO_ICMP),(socket.SOCK_DGRAM,socket.IPPROTO_ICMP)):\n  try:\n    socket.socket(socket.AF_INET,t,p); print('created')\n  except OSError as e: print(errno.errorcode[e.errno])",
    );
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", old.trim()).unwrap();
    assert_eq!(socks, "EPERM\nEPERM");

    // IPv6 destinations behave like IPv4: the AAAA answer is used and redirected.
    let (rc, code, out) = curl(&u1, &ca, &["-6"], "https://api.test/six");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    let a = agent.audit_where(|a| a["path"] == "/six");
    assert_eq!(a["orig_dst"], "[fd31::2]:443");

    // A second user with its own policy gets different decisions.
    let (_, code, _) = curl(&u2, &ca, &[], "https://api.test/u2");
    assert_eq!(code, "403");
    let a = agent.audit_where(|a| a["path"] == "/u2");
    assert_eq!(a["policy"], "restricted");
    assert_eq!(a["user"], "iatest2");
    let (rc, code, out) = curl(&u2, &ca, &[], "https://other.test/u2ok");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    assert!(!out.contains(API_KEY), "the other policy injects nothing");

    // Connecting to the agent's listener directly (not through the redirect) does not escape
    // the user's own policy.
    let direct = format!("http://{}/direct", agent.addr("http"));
    let (_, code, out) = curl(&u2, &ca, &["-H", "Host: api.test"], &direct);
    assert_eq!(code, "403", "{out}");
    let a = agent.audit_where(|a| a["path"] == "/direct");
    assert_eq!(a["policy"], "restricted");
    assert_eq!(a["uid"], u2.uid);

    // Root is not redirected: it reaches the service on 8080 directly.
    assert_eq!(
        py_as_root(&py_connect("10.231.0.2:8080".parse().unwrap())),
        "ok"
    );
    assert!(
        !agent.logs().contains(API_KEY),
        "credential value leaked into logs"
    );

    // The kernel programs' counters, read from their map at scrape time, and the requests by
    // policy.
    let m = crate::metrics::scrape_metrics_blocking(agent.addr("metrics"));
    let redirected = m.value(r#"iron_agent_ebpf_redirects_total{target="https"}"#);
    assert!(redirected.unwrap_or(0.0) >= 5.0, "{}", m.text);
    assert!(
        m.value(r#"iron_agent_ebpf_denials_total{reason="tcp"}"#)
            .unwrap_or(0.0)
            >= 3.0
    );
    assert!(
        m.value(r#"iron_agent_ebpf_denials_total{reason="udp"}"#)
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        m.value(r#"iron_agent_ebpf_denials_total{reason="sock_create"}"#)
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        m.text
    );
    assert!(m.sum("iron_agent_requests_total", &[r#"policy="restricted""#]) >= 3.0);
}

#[test]
fn killing_the_agent_fails_closed_and_a_restart_restores_service() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("e2e MITM CA");
    let cfg = world.config(&mitm);
    let ca = world.mitm_ca();
    let mut agent = world.start_agent(&cfg);
    let (_, code, out) = curl(&u1, &ca, &[], "https://api.test/before");
    assert_eq!(code, "200", "{out}");

    agent.signal(libc::SIGKILL);
    // Programs stay attached: the redirect now leads nowhere, and nothing gets out directly.
    let (rc, _, out) = curl(
        &u1,
        &ca,
        &["--resolve", "api.test:443:10.231.0.2"],
        "https://api.test/down",
    );
    assert_ne!(
        rc, 0,
        "traffic must fail closed while the agent is down: {out}"
    );
    assert_eq!(
        py(&u1, &py_connect("10.231.0.2:8080".parse().unwrap())),
        "EPERM"
    );
    assert_eq!(
        py(&u1, &py_connect("10.231.0.2:443".parse().unwrap())),
        "ECONNREFUSED"
    );

    let agent = world.start_agent(&cfg);
    let (rc, code, out) = curl(&u1, &ca, &[], "https://api.test/after");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
}
