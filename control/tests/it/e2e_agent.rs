//! End to end: an iron-agent receives its policy and a secret from iron-control's sync and
//! injects the secret on the way to a local origin. Until the agent's managed mode lands, the
//! synced `rules` and `secrets` are written into the agent's config as iron-proxy builds its
//! pipeline from a sync (`[allowlist{rules}, secrets{secrets}]`), the secret arriving through
//! the agent's `control_plane` source.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

use crate::scenario;
use crate::support::{agent_bin, api, server, spawn_logged};

const SECRET: &str = "e2e-bearer-from-control-4c1d";

/// An HTTP origin on 127.0.0.1 answering with the Authorization header it received.
async fn echo_origin() -> (u16, tokio::task::JoinHandle<()>) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("<none>")
                        .to_owned();
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        format!("authorization={auth}"),
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (port, task)
}

#[test]
fn agent_injects_a_secret_delivered_by_iron_control() {
    let bin = agent_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` (cargo xtask test does)",
        bin.display()
    );
    let control = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let api = api(&control);
        api.post(
            "/v1/policies/network",
            json!({"name": "local-origin", "priority": 1, "rules": [{"host": "localhost"}]}),
        )
        .await
        .expect(201);
        let prn = scenario::principal(&api, "default", "agent-host").await;
        let ss = scenario::cp_secret(&api, "origin-token", SECRET, "localhost").await;
        scenario::grant(&api, ("principal_id", &prn), "static_secret_id", &ss).await;
        let (_, token) = scenario::proxy(&api, Some(&prn)).await;
        let cfg = api.sync(&token, None).await;
        cfg.expect(200);

        // The agent's config from the sync payload (JSON is YAML).
        let ca = Command::new(&bin)
            .args(["generate-ca", "--outdir"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(ca.status.success(), "{}", String::from_utf8_lossy(&ca.stderr));
        let transforms = json!([
            {"name": "allowlist", "config": {"rules": cfg.json["rules"]}},
            {"name": "secrets", "config": {"secrets": cfg.json["secrets"]}},
        ]);
        let config = format!(
            "dns:\n  enabled: false\nproxy:\n  http_listen: \"127.0.0.1:0\"\n  https_listen: \"127.0.0.1:0\"\n  \
             upstream_deny_cidrs: []\ntls:\n  ca_cert: \"{}\"\n  ca_key: \"{}\"\nmetrics:\n  listen: \"127.0.0.1:0\"\n\
             transforms: {}\n",
            tmp.path().join("ca.crt").display(),
            tmp.path().join("ca.key").display(),
            transforms
        );
        let path = tmp.path().join("agent.yaml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("run").arg("--config").arg(&path);
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"] {
            cmd.env_remove(k);
        }
        let (mut child, lines) = spawn_logged(cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        let http_addr = loop {
            let found = lines.json().into_iter().find_map(|v| {
                (v["msg"] == "listening" && v["listener"] == "http")
                    .then(|| v["addr"].as_str().unwrap().to_owned())
            });
            if let Some(a) = found {
                break a;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("agent exited ({st}): {}", lines.text());
            }
            assert!(Instant::now() < deadline, "agent did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (port, origin) = echo_origin().await;
        let agent = crate::support::Api::new(http_addr.parse().unwrap(), "");
        let r = agent
            .raw("GET", "/", None, &[("host", &format!("localhost:{port}"))])
            .await;
        let logs = lines.text();
        assert_eq!(r.status, 200, "{} / agent logs:\n{logs}", r.text);
        assert_eq!(r.text, format!("authorization=Bearer {SECRET}"));
        // Denied by the synced allowlist: a host no network policy allows.
        let denied = agent
            .raw("GET", "/", None, &[("host", &format!("elsewhere.invalid:{port}"))])
            .await;
        assert_eq!(denied.status, 403);
        let _ = child.kill();
        let _ = child.wait();
        origin.abort();
        let logs = lines.text();
        assert!(!logs.contains(SECRET), "the agent logged the secret");
        assert!(!control.logs().contains(SECRET), "iron-control logged the secret");
    });
}
