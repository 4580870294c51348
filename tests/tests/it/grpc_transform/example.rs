//! The runnable example server users start from (`tests/src/bin/grpc-transform-example.rs`,
//! docs/transforms/grpc.md), run as the docs say, with the agent pointed at it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use iron_agent_tests::Transform;
use serde_json::json;

/// The example process; killed and reaped when dropped.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the example on a free loopback port; returns it and its `localhost:PORT` target.
fn start_example() -> (Example, String) {
    let mut example = Example(
        Command::new(env!("CARGO_BIN_EXE_grpc-transform-example"))
            .args(["127.0.0.1:0", "--reject-prefix", "/admin"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(example.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (example, format!("localhost:{}", addr.port()))
}

#[test]
fn the_example_server_continues_and_rejects_its_prefix() {
    let (_example, target) = start_example();
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let grpc = Transform::new(
            "grpc",
            json!({"name": "example", "target": target, "send_request_body": false}),
        );
        let s = super::setup(vec![Transform::allowlist(&["localhost"]), grpc]).await;
        let host = s.host();

        let r = s.send(super::post(&host, "/hello", "hi")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["body"], "hi", "continued to the origin");
        let r = s.send(super::post(&host, "/admin/users", "hi")).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.text(), r#"{"error":"blocked by the example policy"}"#);

        let rec = s.agent.audit_where(|a| a["path"] == "/admin/users");
        assert_eq!(rec["action"], "reject");
        assert_eq!(rec["rejected_by"], "example");
        let t = &rec["request_transforms"][1];
        assert_eq!(t["annotations"]["example.decision"], "reject", "{rec}");
        let rec = s.agent.audit_where(|a| a["path"] == "/hello");
        assert_eq!(rec["action"], "allow");
        assert_eq!(
            rec["request_transforms"][1]["annotations"]["example.decision"],
            "continue"
        );
    });
}
