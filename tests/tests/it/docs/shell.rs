//! The shell commands of getting-started.md, tunnels.md and installation.md, run as the pages
//! write them ([`Shell`]). Which test runs which command is the table `docs::SHELL`. Allowed
//! requests need an origin on port 80 or 443 (the pages' URLs name no port), so those tests run
//! as root, with the origin on 127.0.0.77 and the agent's resolver and `upstream_deny_cidrs`
//! pointed at it through the `IRON_*` overrides; nothing leaves loopback.

use std::path::Path;
use std::sync::Arc;

use iron_agent_tests::agent::generate_ca;
use iron_agent_tests::dns::fake_zone;
use iron_agent_tests::ebpf_world::echoed_header;
use iron_agent_tests::netns::root_turn;
use iron_agent_tests::{Agent, Origin, OriginKind, TestCa};

use super::run::{Running, Shell};
use super::{docs_dir, page, yaml_blocks};

/// The listeners on ports the kernel picks (the pages' fixed ports may be taken on a shared
/// machine), through the overrides getting-started.md describes.
fn any_ports(sh: Shell) -> Shell {
    sh.env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_TUNNEL_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
}

/// getting-started.md's "Save as `agent.yaml`": the first yaml block after its heading.
fn first_config() -> String {
    let text = page("getting-started.md");
    let at = text
        .find("## A first config")
        .expect("first config section");
    yaml_blocks(Path::new("getting-started.md"), &text[at..])
        .into_iter()
        .next()
        .expect("a yaml block")
        .text
}

/// Local origins standing in for the pages' hosts: `names` resolve (through the returned fake
/// zone) to 127.0.0.77, where a plain HTTP echo listens on port 80 and an HTTPS echo with a
/// certificate for `names` on 443. They run on the returned runtime.
struct LocalOrigins {
    zone: std::net::SocketAddr,
    ca_file: std::path::PathBuf,
    _origins: Vec<Origin>,
    _rt: tokio::runtime::Runtime,
}

impl LocalOrigins {
    fn start(names: &[&str], dir: &Path) -> LocalOrigins {
        let rt = iron_agent_tests::runtime();
        let ca = Arc::new(TestCa::new("docs origin CA"));
        let ca_file = dir.join("origin-ca.pem");
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        let owned: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let entries: Vec<(&str, &str)> = names.iter().map(|n| (*n, "127.0.0.77")).collect();
        let (origins, zone) = rt.block_on(async {
            let http = Origin::start_on("127.0.0.77:80".parse().unwrap(), OriginKind::Http, None);
            let https = Origin::start_on(
                "127.0.0.77:443".parse().unwrap(),
                OriginKind::Https { names: owned },
                Some(&ca),
            );
            (vec![http.await, https.await], fake_zone(&entries).await)
        });
        LocalOrigins {
            zone,
            ca_file,
            _origins: origins,
            _rt: rt,
        }
    }

    /// The agent resolves through the fake zone, may dial loopback, trusts the origins' CA.
    fn point(&self, sh: Shell) -> Shell {
        sh.env("IRON_DNS_UPSTREAM_RESOLVER", self.zone.to_string())
            .env("IRON_PROXY_UPSTREAM_DENY_CIDRS", "169.254.169.254/32")
            .env("SSL_CERT_FILE", self.ca_file.to_string_lossy())
    }
}

/// The echo origin answered (its JSON names the method).
fn echoed(out: &str) -> bool {
    out.contains("\"method\":\"GET\"")
}

/// getting-started.md without outside network: make the CA, save the first config, check it,
/// run it, have the denied request refused and audited once, and start the agent the three ways
/// "your own config" is named (the page's path standing for that config).
#[test]
fn getting_started_commands_work_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut sh = any_ports(Shell::new(
        "getting-started.md",
        "getting_started_commands_work_as_written",
        dir.path(),
    ));
    sh.install_agent("sudo install -m 755 target/release/iron-agent /usr/local/bin/iron-agent");
    let out = sh.ok("iron-agent generate-ca --outdir ./ca");
    assert!(out.contains("wrote ./ca/ca.crt"), "{out}");
    std::fs::write(dir.path().join("agent.yaml"), first_config()).unwrap();
    let out = sh.ok("iron-agent check-config --config agent.yaml");
    assert_eq!(out.trim(), "agent.yaml: ok");

    let agent = sh.spawn_agent("iron-agent run --config agent.yaml", false);
    sh.subst("127.0.0.1:8080", agent.addr("http"));
    let out = sh.ok("curl -i -H 'Host: example.org' http://127.0.0.1:8080/");
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let a = agent.wait_audits("example.org", 1);
    assert_eq!(a[0]["action"], "reject");
    assert_eq!(a[0]["rejected_by"], "allowlist");
    drop(agent);

    let own = dir.path().join("agent.yaml");
    sh.subst("/etc/iron-agent/agent.yaml", own.to_string_lossy());
    for cmd in [
        "iron-agent run --config /etc/iron-agent/agent.yaml",
        "iron-agent --config /etc/iron-agent/agent.yaml",
        "iron-agent -config /etc/iron-agent/agent.yaml",
    ] {
        let agent = sh.spawn_agent(cmd, false);
        // The file's allowlist, not the embedded default's empty one, answers.
        assert_allowlist_of_first_config(&agent, &sh);
    }
}

/// The agent runs the first config, not the embedded default: its CA is the file's `ca/ca.crt`
/// (the default's is generated into the state directory), and the denied request is refused.
fn assert_allowlist_of_first_config(agent: &Running, sh: &Shell) {
    let ca = agent
        .lines
        .json()
        .into_iter()
        .find_map(|v| v["ca_cert"].as_str().map(str::to_string));
    assert_eq!(ca.as_deref(), Some("ca/ca.crt"), "{}", agent.lines.text());
    let http = agent.addr("http");
    let refused = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Host: example.org", &format!("http://{http}/")])
        .env_remove("http_proxy")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "403");
    let a = agent.wait_audits("example.org", 1);
    assert_eq!(a[0]["rejected_by"], "allowlist", "{}", sh.dir.display());
}

/// getting-started.md's allowed requests, as root: the four ways the page reaches
/// `example.com` are served by the local origin, each leaving exactly one `allow` record.
#[test]
fn getting_started_allowed_requests_reach_a_local_origin() {
    let Some(_turn) = root_turn("binds ports 80 and 443 on loopback") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let origins = LocalOrigins::start(&["example.com"], dir.path());
    // The page asks for `https_listen: "127.0.0.1:443"` for its `--resolve` line; the
    // `--connect-to` line then names that port instead of 8443.
    let mut sh = origins.point(
        any_ports(Shell::new(
            "getting-started.md",
            "getting_started_allowed_requests_reach_a_local_origin",
            dir.path(),
        ))
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:443"),
    );
    sh.install_agent("sudo install -m 755 target/release/iron-agent /usr/local/bin/iron-agent");
    generate_ca(&dir.path().join("ca"));
    std::fs::write(dir.path().join("agent.yaml"), first_config()).unwrap();
    let agent = sh.spawn_agent("iron-agent run --config agent.yaml", false);
    sh.subst("127.0.0.1:8080", agent.addr("http"));
    sh.subst("127.0.0.1:8443", agent.addr("https"));
    let cmds = [
        "curl -H 'Host: example.com' http://127.0.0.1:8080/",
        "http_proxy=http://127.0.0.1:8080 curl http://example.com/",
        "curl --connect-to example.com:443:127.0.0.1:8443 --cacert ca/ca.crt https://example.com/",
        "curl --resolve example.com:443:127.0.0.1 --cacert ca/ca.crt https://example.com/",
    ];
    for (i, cmd) in cmds.into_iter().enumerate() {
        let out = sh.ok(cmd);
        assert!(echoed(&out), "{cmd}: {out}\n{}", agent.lines.text());
        let a = agent.wait_audits("example.com", i + 1);
        assert_eq!(a[i]["action"], "allow", "{cmd}");
        assert_eq!(a[i]["status_code"], 200, "{cmd}");
    }
}

/// tunnels.md's example config on the agent, the CA where the page's clients look for it
/// (`ca.crt` in the working directory; the config's `/etc/iron-agent/` standing for it).
fn tunnels_agent(dir: &Path, env: &[(&str, String)]) -> Agent {
    generate_ca(dir);
    let text = page("tunnels.md");
    let config = yaml_blocks(Path::new("tunnels.md"), &text)
        .into_iter()
        .next()
        .expect("the example")
        .text
        .replace("/etc/iron-agent/", &format!("{}/", dir.display()));
    let mut b = Agent::with_config(&config)
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_TUNNEL_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        b = b.env(k, v.clone());
    }
    b.start()
}

/// tunnels.md's plain-HTTP client line goes through the tunnel port and is refused (the
/// example does not allow the host), with one record.
#[test]
fn tunnels_example_refuses_unlisted_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let agent = tunnels_agent(dir.path(), &[("OPENAI_API_KEY", "sk-doc-test".into())]);
    let mut sh = Shell::new(
        "tunnels.md",
        "tunnels_example_refuses_unlisted_hosts",
        dir.path(),
    );
    sh.subst("127.0.0.1:1080", agent.addr("tunnel").to_string());
    let out = sh.run("http_proxy=http://127.0.0.1:1080 curl http://example.internal/");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let a = agent.audit_where(|a| a["host"] == "example.internal");
    assert_eq!(a["action"], "reject");
    assert_eq!(a["status_code"], 403);
}

/// tunnels.md's CONNECT and SOCKS5 client lines, as root: both reach the local
/// `api.openai.com` with the key injected by the example's secrets transform, one setup record
/// and one inner record each, the key in no log line.
#[test]
fn tunnels_clients_reach_a_local_origin_with_the_key_injected() {
    let Some(_turn) = root_turn("binds port 443 on loopback") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let origins = LocalOrigins::start(&["api.openai.com"], dir.path());
    let key = "sk-doc-test-4c1e";
    let agent = tunnels_agent(
        dir.path(),
        &[
            ("OPENAI_API_KEY", key.into()),
            ("IRON_DNS_UPSTREAM_RESOLVER", origins.zone.to_string()),
            (
                "IRON_PROXY_UPSTREAM_DENY_CIDRS",
                "169.254.169.254/32".into(),
            ),
            ("SSL_CERT_FILE", origins.ca_file.to_string_lossy().into()),
        ],
    );
    let mut sh = Shell::new(
        "tunnels.md",
        "tunnels_clients_reach_a_local_origin_with_the_key_injected",
        dir.path(),
    );
    sh.subst("127.0.0.1:1080", agent.addr("tunnel").to_string());
    let cmds = [
        "HTTPS_PROXY=http://127.0.0.1:1080 curl --cacert ca.crt https://api.openai.com/v1/models",
        "ALL_PROXY=socks5h://127.0.0.1:1080 curl --cacert ca.crt https://api.openai.com/v1/models",
    ];
    for (i, cmd) in cmds.into_iter().enumerate() {
        let out = sh.ok(cmd);
        assert_eq!(
            echoed_header(&out, "authorization").as_deref(),
            Some(format!("Bearer {key}").as_str()),
            "{cmd}: {out}"
        );
        let setups = agent.audits_where(i + 1, |a| a["host"] == "api.openai.com:443");
        assert_eq!(setups[i]["method"], "CONNECT");
        let inner = agent.audits_where(i + 1, |a| a["host"] == "api.openai.com");
        assert_eq!(inner[i]["status_code"], 200);
        assert_eq!(inner[i]["tunnel"]["protocol"], ["connect", "socks5"][i]);
    }
    agent.assert_not_logged(key);
}

/// installation.md's `install --root` dry run, its `cat`, and `uninstall --root --purge`, in a
/// temporary directory standing for `/tmp/iron-dry-run`.
#[test]
fn installation_dry_run_commands_work_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("iron-dry-run");
    let mut sh = Shell::new(
        "installation.md",
        "installation_dry_run_commands_work_as_written",
        dir.path(),
    );
    sh.subst("/tmp/iron-dry-run", root.to_string_lossy());
    sh.install_agent("sudo install -m 755 target/release/iron-agent /usr/local/bin/iron-agent");
    let out = sh
        .ok("iron-agent install --root /tmp/iron-dry-run --govern-user nobody --allow example.com");
    assert!(out.contains("governs only users [nobody]"), "{out}");
    let cfg = sh.ok("cat /tmp/iron-dry-run/etc/iron-agent/config.yaml");
    assert!(
        cfg.contains("default: exempt") && cfg.contains("example.com"),
        "{cfg}"
    );
    sh.ok("iron-agent uninstall --root /tmp/iron-dry-run --purge");
    assert!(!root.join("etc/iron-agent/config.yaml").exists());
    assert!(!root.join("etc/iron-agent/ca.crt").exists());
    assert!(docs_dir().join("installation.md").exists());
}
