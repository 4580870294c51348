//! The HTTP and HTTPS listeners end to end: real agent binary, real TLS, loopback origins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::client::get;
use iron_agent_tests::{
    Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request, https_request,
};

struct Env {
    agent: Agent,
    /// The agent's MITM CA (clients trust it).
    #[allow(dead_code)]
    mitm: TestCa,
    _origin_ca: TestCa,
    _dir: tempfile::TempDir,
}

fn start(transforms: Vec<Transform>, extra_env: &[(&str, String)]) -> (Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mitm = TestCa::new("iron-agent test MITM CA");
    let (c, k) = mitm.write(dir.path());
    let origin_ca = TestCa::new("test origin CA");
    let origin_ca_path = dir.path().join("origin-ca.pem");
    std::fs::write(&origin_ca_path, &origin_ca.cert_pem).unwrap();
    let mut b = Agent::with(&AgentConfig::loopback(&c, &k).transforms(transforms))
        .env("SSL_CERT_FILE", origin_ca_path.to_string_lossy());
    for (k, v) in extra_env {
        b = b.env(k, v.clone());
    }
    let agent = b.start();
    let dir2 = tempfile::tempdir().unwrap();
    (
        Env {
            agent,
            mitm,
            _origin_ca: origin_ca,
            _dir: dir,
        },
        dir2,
    )
}

fn allow_localhost() -> Vec<Transform> {
    vec![Transform::allowlist(&["localhost"])]
}

#[test]
fn http_allowed_and_denied() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let origin = Origin::start(OriginKind::Http, None).await;
        let (env, _d) = start(allow_localhost(), &[]);
        let http = env.agent.addr("http");

        // Allowed: Host names the origin; the agent dials it.
        let host = format!("localhost:{}", origin.port());
        let r = http_request(http, get(&host, "/hello?x=1")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/hello?x=1");
        assert_eq!(r.echoed_header("host").as_deref(), Some(host.as_str()));

        // Denied: another host, never dialled.
        let before = origin.hits();
        let r = http_request(http, get(&format!("127.0.0.1:{}", origin.port()), "/")).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(origin.hits(), before);

        let allow = env.agent.audit_where(|a| a["path"] == "/hello");
        assert_eq!(allow["action"], "allow");
        assert_eq!(allow["status_code"], 200);
        assert_eq!(allow["host"], host);
        assert_eq!(allow["level"], "INFO");
        assert_eq!(allow["msg"], "request");
        assert_eq!(allow["request_transforms"][0]["name"], "allowlist");
        assert_eq!(allow["request_transforms"][0]["action"], "allow");
        assert_eq!(allow["response_transforms"][0]["name"], "allowlist");
        assert!(
            allow["remote_addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert!(allow["duration_ms"].as_f64().is_some());
        assert!(allow["time"].as_str().is_some());

        let deny = env.agent.audit_where(|a| a["action"] == "reject");
        assert_eq!(deny["status_code"], 403);
        assert_eq!(deny["rejected_by"], "allowlist");
        assert_eq!(deny["level"], "WARN");
        assert_eq!(deny["request_transforms"][0]["action"], "reject");
    });
}

#[test]
fn https_mitm_allowed_and_denied() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let origin_ca = TestCa::new("origin CA");
        let origin = Origin::start(
            OriginKind::Https {
                names: vec!["localhost".into()],
            },
            Some(&origin_ca),
        )
        .await;
        let ca_path = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, &origin_ca.cert_pem).unwrap();
        let mitm = TestCa::new("mitm");
        let (c, k) = mitm.write(dir.path());
        let agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms(allow_localhost()))
            .env("SSL_CERT_FILE", ca_path.to_string_lossy())
            .start();
        let https = agent.addr("https");
        let host = format!("localhost:{}", origin.port());

        let r = https_request(
            https,
            "localhost",
            mitm.client_config(),
            get(&host, "/secure"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()["uri"], "/secure");
        let a = agent.audit_where(|a| a["path"] == "/secure");
        assert_eq!(a["sni"], "localhost");
        assert_eq!(a["action"], "allow");

        // A client that does not trust the MITM CA fails the handshake (no silent bypass).
        let other = TestCa::new("unrelated");
        assert!(
            https_request(https, "localhost", other.client_config(), get(&host, "/"))
                .await
                .is_err()
        );
    });
}

#[test]
fn default_deny_cidr_blocks_loopback_upstream() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let origin = Origin::start(OriginKind::Http, None).await;
        let dir = tempfile::tempdir().unwrap();
        let mitm = TestCa::new("mitm");
        let (c, k) = mitm.write(dir.path());
        // Key absent → loopback denied by default; localhost resolves into 127.0.0.0/8.
        let cfg = AgentConfig::loopback(&c, &k)
            .transforms(allow_localhost())
            .with(|c| c.proxy.upstream_deny_cidrs = None);
        let agent = Agent::with(&cfg).start();
        let host = format!("localhost:{}", origin.port());
        let r = http_request(agent.addr("http"), get(&host, "/x")).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.text(), "bad gateway\n");
        assert_eq!(origin.hits(), 0, "a denied address must never be dialled");
        let a = agent.audit_where(|a| a["path"] == "/x");
        assert_eq!(a["action"], "error");
        assert_eq!(a["level"], "ERROR");
        let err = a["error"].as_str().unwrap();
        assert!(err.contains("denied by upstream_deny_cidrs"), "{err}");
        assert!(
            err.contains("in 127.0.0.0/8") || err.contains("in ::1/128"),
            "{err}"
        );
    });
}

#[allow(dead_code)]
fn body(s: &'static str) -> Full<Bytes> {
    Full::new(Bytes::from_static(s.as_bytes()))
}
