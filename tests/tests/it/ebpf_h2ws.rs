//! eBPF interception end to end, as root, for HTTP/2, WebSocket (over HTTP/1.1 and HTTP/2) and gRPC: governed users with no
//! proxy settings speak them to "remote" hosts in the test namespace, through the redirect, and
//! get the same policy, credentials and identity-carrying audit records as HTTP/1.1 clients.
//! Same world as `ebpf_e2e.rs` (see `iron_agent_tests::ebpf_world`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::ebpf_world::{API_KEY, World, curl, echoed_header};
use iron_agent_tests::netns::TestUser;
use iron_agent_tests::ws::{SeenKeys, serve_echo};
use iron_agent_tests::{KillOnDrop, TestCa};
use serde_json::Value;
use tokio::net::TcpListener;

/// Why these tests need root.
const WHY: &str = "eBPF programs, test users, a network namespace";

/// Starts a TLS WebSocket echo server for `ws.test` on 10.231.0.5:443 inside the namespace
/// (HTTP/1.1 only); returns the `x-api-key` of every handshake it accepted.
fn ws_origin(world: &World) -> SeenKeys {
    let acceptor = world.origin_ca.acceptor(&["ws.test"], &[]);
    let seen = SeenKeys::default();
    let keys = seen.clone();
    world.ns.serve_in(move || async move {
        let listener = TcpListener::bind("10.231.0.5:443").await.unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, keys) = (acceptor.clone(), keys.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve_echo(tls, keys).await;
                    }
                });
            }
        });
    });
    seen
}

/// A WebSocket client on a raw TLS socket (the standard library only): handshake to
/// `wss://ws.test/chat`, one masked text frame, read the echo, close. Prints JSON.
const WS_CLIENT: &str = r#"
import base64, json, os, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("ws.test", 443), timeout=10), server_hostname="ws.test")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d:
        break
    buf += d
head, _, rest = buf.partition(b"\r\n\r\n")
status = head.split(b"\r\n")[0].decode()
def frame(op, payload):
    mask = os.urandom(4)
    return bytes([0x80 | op, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
echo = ""
if " 101 " in status:
    s.sendall(frame(1, b"hello through the redirect"))
    while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
        d = s.recv(4096)
        if not d:
            break
        rest += d
    echo = rest[2:2 + (rest[1] & 0x7F)].decode()
    s.sendall(frame(8, b"\x03\xe8"))
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
print(json.dumps({"status": status, "echo": echo}))
"#;

#[test]
fn http2_and_websocket_through_the_redirect() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let ws_keys = ws_origin(&world);
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("e2e MITM CA");
    let agent = world.start_agent(&world.config(&mitm));
    let ca = world.mitm_ca();

    // HTTP/2 end to end (the h2.test origin offers h2): the credential is injected, the origin
    // saw HTTP/2, and the record carries the identity and `protocol: h2`.
    let (rc, code, out) = curl(&u1, &ca, &["--http2"], "https://h2.test/h2");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}\n{}", agent.logs());
    assert_eq!(echoed_header(&out, "x-api-key").as_deref(), Some(API_KEY));
    assert!(out.contains(r#""version":"HTTP/2.0""#), "{out}");
    let a = agent.audit_where(|a| a["path"] == "/h2");
    assert_eq!(a["protocol"], "h2");
    assert_eq!(a["action"], "allow");
    assert_eq!(a["uid"], u1.uid);
    assert_eq!(a["comm"], "curl");
    assert_eq!(a["orig_dst"], "10.231.0.4:443");
    // An HTTP/2 client to an HTTP/1.1-only origin works too.
    let (rc, code, out) = curl(&u1, &ca, &["--http2", "-4"], "https://api.test/h2to1");
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    assert!(out.contains(r#""version":"HTTP/1.1""#), "{out}");
    assert_eq!(
        agent.audit_where(|a| a["path"] == "/h2to1")["protocol"],
        "h2"
    );
    // The other user's policy refuses h2.test over HTTP/2 as well.
    let (_, code, out) = curl(&u2, &ca, &["--http2"], "https://h2.test/h2denied");
    assert_eq!(code, "403", "{out}");
    let a = agent.audit_where(|a| a["path"] == "/h2denied");
    assert_eq!(a["protocol"], "h2");
    assert_eq!(a["policy"], "restricted");
    assert_eq!(a["uid"], u2.uid);

    // WebSocket over HTTP/1.1 Upgrade: the handshake got the credential, frames flow both ways,
    // and the record written at close has the upstream's 101 and the identity.
    let ca_arg = ca.to_string_lossy().into_owned();
    let out = u1.run(&["/usr/bin/python3", "-c", WS_CLIENT, &ca_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let res: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "ws client: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.logs()
        )
    });
    assert!(
        res["status"].as_str().unwrap().starts_with("HTTP/1.1 101"),
        "{res}"
    );
    assert_eq!(res["echo"], "hello through the redirect", "{res}");
    assert_eq!(*ws_keys.lock().unwrap(), [API_KEY]);
    let a = agent.audit_where(|a| a["path"] == "/chat");
    assert_eq!(a["protocol"], "websocket");
    assert_eq!(a["status_code"], 101);
    assert_eq!(a["action"], "allow");
    assert_eq!(a["uid"], u1.uid);
    assert_eq!(a["orig_dst"], "10.231.0.5:443");
    // The restricted user cannot open it: a 403 to the handshake, the origin never asked.
    let out = u2.run(&["/usr/bin/python3", "-c", WS_CLIENT, &ca_arg]);
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        res["status"].as_str().unwrap().starts_with("HTTP/1.1 403"),
        "{res}"
    );
    assert_eq!(ws_keys.lock().unwrap().len(), 1);

    // WebSocket over HTTP/2 (extended CONNECT) from a governed user's own process; the agent
    // opens the origin side as an HTTP/1.1 Upgrade, with the credential.
    let client = env!("CARGO_BIN_EXE_ws-h2-client");
    let out = u1.run(&[client, "ws.test", "/h2chat", &ca_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let res: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "ws-h2-client: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.logs()
        )
    });
    assert_eq!(res["status"], 200, "{res}");
    assert_eq!(res["opcode"], 1, "{res}");
    assert_eq!(res["echo"], "hello over h2", "{res}");
    assert_eq!(*ws_keys.lock().unwrap(), [API_KEY, API_KEY]);
    let a = agent.audit_where(|a| a["path"] == "/h2chat");
    assert_eq!(a["protocol"], "websocket");
    assert_eq!(a["status_code"], 101);
    assert_eq!(a["uid"], u1.uid);
    assert_eq!(a["comm"], "ws-h2-client");
    assert_eq!(a["orig_dst"], "10.231.0.5:443");
    assert!(
        !agent.logs().contains(API_KEY),
        "credential value leaked into logs"
    );
}

fn grpc_script(name: &str) -> String {
    iron_agent_tests::helper(&format!("grpc_{name}"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn grpc_through_the_redirect() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    // The governed user runs the system python (not root's environment).
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "/usr/bin/python3 with grpcio is required: /usr/bin/python3 -m pip install grpcio"
    );
    let (chain_path, key_path) =
        world
            .origin_ca
            .write_server_cert(world.dir.path(), "g", &["grpc.test"]);
    // A real gRPC server on grpc.test (10.231.0.6:443) inside the namespace.
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &world.ns.name, "/usr/bin/python3"])
        .arg(grpc_script("server.py"))
        .arg(&chain_path)
        .arg(&key_path)
        .arg("10.231.0.6:443")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    assert_eq!(port.trim(), "443", "grpc server did not start");
    let _server = KillOnDrop(server);

    let u1 = TestUser::ensure("iatest1");
    let mitm = TestCa::new("e2e MITM CA");
    let agent = world.start_agent(&world.config(&mitm));
    let ca = world.mitm_ca().to_string_lossy().into_owned();
    // The client dials grpc.test:443 itself: name resolution and the connection are redirected.
    let client = grpc_script("client.py");
    let out = u1.run(&[
        "/usr/bin/python3",
        &client,
        "grpc.test:443",
        "grpc.test:443",
        &ca,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc client failed: {stdout}\n{}\nagent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.logs()
    );
    let res: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        res["unary"],
        format!("auth=Bearer {API_KEY};msg=hello"),
        "{res}"
    );
    assert_eq!(res["unary_trailers"]["x-trailer"], "t1", "{res}");
    assert_eq!(res["stream"], serde_json::json!(["s-0", "s-1", "s-2"]));
    assert_eq!(res["fail"]["code"], "NOT_FOUND", "{res}");
    for path in ["/test.Echo/Unary", "/test.Echo/Stream", "/test.Echo/Fail"] {
        let rec = agent.audit_where(|a| a["path"] == path);
        assert_eq!(rec["protocol"], "h2", "{rec}");
        assert_eq!(rec["action"], "allow");
        assert_eq!(rec["uid"], u1.uid);
        assert_eq!(rec["orig_dst"], "10.231.0.6:443");
    }
    assert!(
        !agent.logs().contains(API_KEY),
        "credential value leaked into logs"
    );
}
