//! The world of the root-only eBPF end-to-end tests: a network namespace `iae2e` whose
//! addresses stand in for remote hosts (HTTPS echo origins for `api.test`, `other.test` and
//! `denied.test` on 10.231.0.2:443, [fd31::2]:443 and 10.231.0.3:443; an HTTPS echo offering
//! HTTP/2 for `h2.test` on 10.231.0.4:443; a plain HTTP echo on 10.231.0.2:8080; 10.231.0.5 and
//! 10.231.0.6 free for test files' own servers, named `ws.test` and `grpc.test`), a fake DNS
//! zone naming them, and an agent with `intercept: mode: ebpf`
//! governing the test users `iatest1` (top-level pipeline) and `iatest2` (policy `restricted`).
//! Nothing leaves the machine.
//!
//! [`World::enter`] is the start of every such test: the root check, the machine's turn
//! ([`crate::machine_lock`]), the world; dropping it removes the namespace, the pins and the
//! temp dir and the users `iatest1`/`iatest2` it created, then gives the turn back. Other test
//! users ([`TestUser::ensure`]) and cgroups
//! ([`crate::netns::TestCgroup`]) a test creates after it are removed before it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::agent::AgentBuilder;
use crate::config::{AgentConfig, Dns, Metrics, Proxy, Tls, Transform};
use crate::dns::fake_zone;
use crate::netns::{NetNs, TestUser, output_text, root_turn, sh};
use crate::{Agent, Origin, OriginKind, TestCa};

pub const PIN_DIR: &str = "/sys/fs/bpf/iron-agent-e2e";
/// The credential the top-level pipeline injects for `api.test` (as `X-Api-Key`).
pub const API_KEY: &str = "real-api-key-7f3a";

pub struct World {
    pub ns: NetNs,
    pub dir: tempfile::TempDir,
    pub zone: std::net::SocketAddr,
    /// Signs every origin's certificate; the agent trusts it (`SSL_CERT_FILE`).
    pub origin_ca: Arc<TestCa>,
    /// Runs helpers the tests start in the agent's (root, exempt) world, e.g. upstream proxies.
    pub rt: tokio::runtime::Runtime,
    /// Served by the namespace's runtime; stopped on drop.
    _origins: Vec<Origin>,
    // Dropped after the fields above (declaration order): the users the standard config
    // names, then the pins, and the machine's turn is given back last.
    _users: [TestUser; 2],
    _unpin: Unpin,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl World {
    /// The start of a root eBPF test: `None` (after a `SKIP` line naming `why`) without root,
    /// else the world, built once this test has the machine to itself.
    pub fn enter(why: &str) -> Option<World> {
        let turn = root_turn(why)?;
        Some(World::build(Unpin::fresh(), turn))
    }

    fn build(unpin: Unpin, turn: std::sync::MutexGuard<'static, ()>) -> World {
        let rt = crate::runtime();
        let ns = NetNs::new(
            "iae2e",
            "10.231.0.1",
            &[
                "10.231.0.2",
                "10.231.0.3",
                "10.231.0.4",
                "10.231.0.5",
                "10.231.0.6",
            ],
            "fd31::1",
            "fd31::2",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let origin_ca = Arc::new(TestCa::new("e2e origin CA"));
        let ca = origin_ca.clone();
        let ca_path = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, &origin_ca.cert_pem).unwrap();
        std::fs::set_permissions(&ca_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let origins: Vec<Origin> = ns.serve_in(move || async move {
            let names = || OriginKind::Https {
                names: vec!["api.test".into(), "other.test".into(), "denied.test".into()],
            };
            let h2 = OriginKind::HttpsH2 {
                names: vec!["h2.test".into()],
            };
            vec![
                Origin::start_on("10.231.0.2:443".parse().unwrap(), names(), Some(&ca)).await,
                Origin::start_on("[fd31::2]:443".parse().unwrap(), names(), Some(&ca)).await,
                Origin::start_on("10.231.0.3:443".parse().unwrap(), names(), Some(&ca)).await,
                Origin::start_on("10.231.0.2:8080".parse().unwrap(), OriginKind::Http, None).await,
                Origin::start_on("10.231.0.4:443".parse().unwrap(), h2, Some(&ca)).await,
            ]
        });
        let zone = rt.block_on(fake_zone(&[
            ("api.test", "10.231.0.2"),
            ("api.test", "fd31::2"),
            ("other.test", "10.231.0.2"),
            ("denied.test", "10.231.0.2"),
            ("h2.test", "10.231.0.4"),
            ("ws.test", "10.231.0.5"),
            ("grpc.test", "10.231.0.6"),
        ]));
        World {
            ns,
            dir,
            zone,
            origin_ca,
            rt,
            // Every agent on the standard config needs both to exist; a test's own
            // `TestUser::ensure("iatest1")` then finds (and leaves) this one.
            _origins: origins,
            _users: [TestUser::ensure("iatest1"), TestUser::ensure("iatest2")],
            _unpin: unpin,
            _turn: turn,
        }
    }

    /// The standard config: MITM with `mitm` as the agent's CA.
    pub fn config(&self, mitm: &TestCa) -> AgentConfig {
        self.config_with(self.mitm_tls(mitm))
    }

    /// The `tls:` section for MITM with `mitm` (written to `ca.crt`/`ca.key`, the cert readable
    /// by the test users).
    pub fn mitm_tls(&self, mitm: &TestCa) -> Tls {
        let (c, k) = mitm.write(self.dir.path());
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o644)).unwrap();
        Tls::mitm(&c, &k)
    }

    /// The standard config with another `tls:` section: DNS from the world's zone, the
    /// default `upstream_deny_cidrs`, `api.test` and friends allowed (`other.test` only for
    /// `iatest2`), `API_KEY` injected, users `iatest1`/`iatest2` governed through eBPF.
    pub fn config_with(&self, tls: Tls) -> AgentConfig {
        AgentConfig {
            dns: Dns {
                listen: Some("127.0.0.1:0".into()),
                upstream_resolver: Some(self.zone.to_string()),
                ..Dns::default()
            },
            proxy: Proxy::any_port(),
            tls,
            mcp: None,
            mcp_gateway: None,
            metrics: Some(Metrics::any_port()),
            transforms: vec![
                Transform::allowlist(&[
                    "api.test",
                    "other.test",
                    "h2.test",
                    "ws.test",
                    "grpc.test",
                ]),
                Transform::secrets(json!([
                    {
                        "source": {"type": "env", "var": "API_KEY"},
                        "inject": {"header": "X-Api-Key"},
                        "rules": [{"host": "api.test"}, {"host": "h2.test"}, {"host": "ws.test"}],
                    },
                    {
                        "source": {"type": "env", "var": "API_KEY"},
                        "replace": {"proxy_value": "proxy-token-abc", "match_headers": ["Authorization"]},
                        "rules": [{"host": "grpc.test"}],
                    },
                ])),
            ],
            intercept: Some(json!({
                "mode": "ebpf",
                "default": "exempt",
                "governed": {"users": ["iatest1"]},
                "pin_dir": PIN_DIR,
                "policies": [{
                    "name": "restricted",
                    "users": ["iatest2"],
                    "transforms": [{"name": "allowlist", "config": {"domains": ["other.test"]}}],
                }],
            })),
            log: None,
            postgres: None,
        }
    }

    /// The agent on `cfg`, trusting the origins' CA, with `API_KEY` set: add environment
    /// variables, then `start_attached()` (or `start()` when it may refuse to start).
    pub fn agent(&self, cfg: &AgentConfig) -> AgentBuilder {
        Agent::with(cfg)
            .env("SSL_CERT_FILE", self.origin_ca().to_string_lossy())
            .env("API_KEY", API_KEY)
    }

    /// Starts the agent ([`World::agent`]) and checks that the eBPF programs are attached.
    pub fn start_agent(&self, cfg: &AgentConfig) -> Agent {
        self.agent(cfg).start_attached()
    }

    /// The agent's MITM CA certificate (after [`World::mitm_tls`]).
    pub fn mitm_ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The CA that signed the origins' certificates.
    pub fn origin_ca(&self) -> PathBuf {
        self.dir.path().join("origin-ca.pem")
    }
}

/// An `intercept:` block in eBPF mode pinning at [`PIN_DIR`], everything else exempt by
/// default; `fields` (an object: `governed`, `deny`, `policies`, ...) are added to it.
pub fn intercept(fields: serde_json::Value) -> serde_json::Value {
    let mut block = json!({"mode": "ebpf", "default": "exempt", "pin_dir": PIN_DIR});
    for (k, v) in fields.as_object().expect("intercept fields: an object") {
        block[k] = v.clone();
    }
    block
}

/// Removes the pins at [`PIN_DIR`] (and so detaches the programs): when made, in case an
/// aborted run left some, and on drop, whatever happened in the test.
pub struct Unpin(());

impl Unpin {
    pub fn fresh() -> Unpin {
        let _ = sh(&format!("rm -rf {PIN_DIR}"));
        Unpin(())
    }
}

impl Drop for Unpin {
    fn drop(&mut self) {
        let _ = sh(&format!("rm -rf {PIN_DIR}"));
    }
}

/// curl as `user` trusting only `ca`: (exit code, HTTP status, stdout + stderr).
pub fn curl(user: &TestUser, ca: &Path, extra: &[&str], url: &str) -> (i32, String, String) {
    curl_env(user, &[], ca, extra, url)
}

/// [`curl`] with environment variables (e.g. `HTTPS_PROXY`).
pub fn curl_env(
    user: &TestUser,
    env: &[(&str, &str)],
    ca: &Path,
    extra: &[&str],
    url: &str,
) -> (i32, String, String) {
    let ca = ca.to_string_lossy().into_owned();
    let mut args = vec![
        "/usr/bin/curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca.as_str(),
        "-w",
        "\n%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = user.run_env(env, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = stdout.lines().last().unwrap_or("").to_string();
    (
        out.status.code().unwrap_or(-1),
        code,
        stdout + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `python3 -c code` as `user`: stdout and stderr, trimmed.
pub fn py(user: &TestUser, code: &str) -> String {
    output_text(&user.python(code))
}

/// `python3 -c code` as root (exempt from interception): stdout, trimmed.
pub fn py_as_root(code: &str) -> String {
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(code)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The value of header `name` in an echo origin's JSON reply found in curl's output.
pub fn echoed_header(out: &str, name: &str) -> Option<String> {
    let json = out.lines().find(|l| l.starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str().map(str::to_string))
}
