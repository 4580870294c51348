//! gRPC through the agent: a real gRPC server (Python grpcio, TLS with a test CA) and a real
//! gRPC client dialling the agent's MITM listener. Unary with trailing metadata, server
//! streaming, and an error status (a trailers-only response) must all arrive intact, with a
//! credential injected into the call's metadata by the `secrets` transform.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use iron_agent_tests::mitm::MitmAgent;
use iron_agent_tests::{AgentConfig, TestCa, allow_localhost_with_secret};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "real-grpc-token-777";
/// What `tests/helpers/grpc_client.py` sends as its bearer token.
const PLACEHOLDER: &str = "proxy-token-abc";

fn script(name: &str) -> std::path::PathBuf {
    iron_agent_tests::helper(&format!("grpc_{name}"))
}

/// grpcio is a test prerequisite (`pip install grpcio`); without it this test fails loudly.
fn require_grpcio() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 with grpcio is required: pip install grpcio");
}

#[test]
fn grpc_unary_streaming_and_error_status_through_the_agent() {
    require_grpcio();
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let origin_ca = TestCa::new("origin");
        let (chain_path, key_path) = origin_ca.write_server_cert(dir.path(), "srv", &["localhost"]);

        let mut server = tokio::process::Command::new("python3")
            .arg(script("server.py"))
            .arg(&chain_path)
            .arg(&key_path)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
        let port: u16 = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("grpc server start")
            .unwrap()
            .expect("grpc server port")
            .trim()
            .parse()
            .unwrap();

        let transforms = allow_localhost_with_secret("API_TOKEN", PLACEHOLDER, "Authorization");
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .env("API_TOKEN", TOKEN)
            .start(|c, k| AgentConfig::loopback(c, k).transforms(transforms));
        let agent = &m.agent;

        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("python3")
                .arg(script("client.py"))
                .arg(agent.addr("https").to_string())
                .arg(format!("localhost:{port}"))
                .arg(m.dir.path().join("ca.crt"))
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("grpc client finished")
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "grpc client failed: {stdout}\n{}\nagent logs:\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.logs()
        );
        let res: Value = serde_json::from_str(stdout.trim()).unwrap();

        // Unary: the server saw the real credential; the response and its trailers arrived.
        assert_eq!(
            res["unary"],
            format!("auth=Bearer {TOKEN};msg=hello"),
            "{res}"
        );
        assert_eq!(res["unary_code"], "OK");
        assert_eq!(res["unary_trailers"]["x-trailer"], "t1", "{res}");
        // Server streaming: every message, in order, then OK.
        assert_eq!(res["stream"], serde_json::json!(["s-0", "s-1", "s-2"]));
        // Error status travels in trailers (here a trailers-only response).
        assert_eq!(res["fail"]["code"], "NOT_FOUND", "{res}");
        assert_eq!(res["fail"]["details"], "no such thing");

        let recs = agent.wait_audits(3);
        assert_eq!(recs.len(), 3, "{recs:?}");
        for (path, rec) in ["/test.Echo/Unary", "/test.Echo/Stream", "/test.Echo/Fail"]
            .iter()
            .map(|p| (*p, recs.iter().find(|r| r["path"] == *p)))
        {
            let rec = rec.unwrap_or_else(|| panic!("no record for {path}: {recs:?}"));
            assert_eq!(rec["protocol"], "h2", "{rec}");
            assert_eq!(rec["method"], "POST");
            assert_eq!(rec["action"], "allow");
            assert_eq!(rec["status_code"], 200);
            assert_eq!(rec["host"], format!("localhost:{port}"));
        }
        agent.assert_not_logged(TOKEN);
        let _ = server.kill().await;
    });
}
