//! `iron-agent policy test`, `policy replay`, `policy suggest` and `summary` on audit logs written by the
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! running agent, and docs/policy-workflow.md's commands as written there.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::agent::{AgentBuilder, agent_bin};
use iron_agent_tests::dns::fake_zone;
use iron_agent_tests::{Agent, Origin, OriginKind, http_request};
use serde_json::Value;

fn page() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/policy-workflow.md");
    std::fs::read_to_string(p).unwrap()
}

/// The first ```yaml block after `marker`.
fn yaml_after(page: &str, marker: &str) -> String {
    let at = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not on the page"));
    let rest = &page[at..];
    let start = rest.find("```yaml\n").expect("a yaml block") + 8;
    let end = rest[start..].find("```").expect("closed block");
    rest[start..start + end].to_string()
}

/// Every `iron-agent ...` line of the page's ```sh blocks, in order.
fn commands(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in page.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && l.starts_with("iron-agent ") => out.push(l.to_string()),
            _ => {}
        }
    }
    out
}

/// Runs a page command (`iron-agent` and shell redirections stripped) in `dir`.
fn sh(dir: &Path, line: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<&str> = line
        .split_whitespace()
        .skip(1)
        .take_while(|a| !a.starts_with("2>") && *a != ">")
        .collect();
    let out = Command::new(agent_bin())
        .args(&args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn req(method: &str, host: &str, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[path = "policy_learn.rs"]
mod learn;

/// The agent running `config` (a page block) on free ports, resolving through `zone`.
fn start(dir: &Path, config: &str, zone: std::net::SocketAddr) -> Agent {
    builder(dir, config, zone).start()
}

/// As [`start`], not started yet (to add environment).
fn builder(dir: &Path, config: &str, zone: std::net::SocketAddr) -> AgentBuilder {
    let text = config
        .replace("\"ca/ca.crt\"", &format!("{:?}", dir.join("ca/ca.crt")))
        .replace("\"ca/ca.key\"", &format!("{:?}", dir.join("ca/ca.key")));
    Agent::with_config(&text)
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
        .env("IRON_DNS_UPSTREAM_RESOLVER", zone.to_string())
        // The test's origins are on loopback, which the default deny list guards.
        .env("IRON_PROXY_UPSTREAM_DENY_CIDRS", "192.0.2.1/32")
}

/// The job of the page: two GitHub calls and one to PyPI, through the agent's HTTP listener.
async fn job(agent: &Agent, port: u16, extra: &[(&str, &str, &str)]) {
    let http = agent.addr("http");
    let gh = format!("api.github.com:{port}");
    let pypi = format!("pypi.org:{port}");
    let mut reqs = vec![
        ("GET", gh.clone(), "/repos/octo/hello".to_string()),
        ("POST", gh.clone(), "/repos/octo/hello/pulls".to_string()),
        ("GET", pypi, "/simple/requests/".to_string()),
    ];
    for (m, h, p) in extra {
        reqs.push((m, format!("{h}:{port}"), p.to_string()));
    }
    for (m, h, p) in reqs {
        http_request(http, req(m, &h, &p)).await;
    }
}

#[test]
fn policy_workflow_commands_work_as_written() {
    let page = page();
    let cmds = commands(&page);
    let expected = [
        "iron-agent generate-ca --outdir ./ca",
        "iron-agent run --config observe.yaml 2> audit.jsonl",
        "iron-agent summary audit.jsonl",
        "iron-agent policy suggest audit.jsonl --config observe.yaml > suggested.yaml",
        "iron-agent policy replay audit.jsonl --config suggested.yaml",
        "iron-agent policy suggest audit.jsonl --diff enforce.yaml",
        "iron-agent policy test --config enforce.yaml GET https://api.github.com/repos/octo/hello",
        "iron-agent policy test --config enforce.yaml DELETE https://api.github.com/repos/octo/hello",
        "iron-agent policy replay audit.jsonl --config enforce.yaml",
        "iron-agent policy replay audit.jsonl --config candidate.yaml --format json",
    ];
    assert_eq!(cmds, expected, "every command of the page is run below");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(sh(d, &cmds[0], &[]).0, 0);
    for (name, marker) in [
        ("observe.yaml", "Save as `observe.yaml`"),
        ("enforce.yaml", "Save as `enforce.yaml`"),
        ("candidate.yaml", "in `candidate.yaml`"),
    ] {
        std::fs::write(d.join(name), yaml_after(&page, marker)).unwrap();
    }
    let rt = iron_agent_tests::runtime();
    let (origin, zone) = rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let z = fake_zone(&[("api.github.com", "127.0.0.1"), ("pypi.org", "127.0.0.1")]).await;
        (o, z)
    });
    let port = origin.port();

    // 1. observe: the agent's own stderr is the audit log.
    let observe = std::fs::read_to_string(d.join("observe.yaml")).unwrap();
    let agent = start(d, &observe, zone);
    rt.block_on(job(&agent, port, &[]));
    let audits = agent.wait_audits(3);
    assert!(audits.iter().all(|a| a["action"] == "allow"), "{audits:?}");
    std::fs::write(d.join("audit.jsonl"), agent.logs()).unwrap();
    drop(agent);

    // 2. summary
    let (code, out, err) = sh(d, &cmds[2], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("3 requests: 3 allowed, 0 denied, 0 errors"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "| - | - | api.github.com:{port} | 2 | 0 | 0 | 0 |"
        )),
        "{out}"
    );

    // 3. suggest: the page shows the output as it is; the log replays unchanged against it.
    let (code, out, err) = sh(d, &cmds[3], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains(&format!("```yaml\n{out}```")),
        "not on the page:\n{out}"
    );
    std::fs::write(d.join("suggested.yaml"), &out).unwrap();
    let (code, out, err) = sh(d, &cmds[4], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 replayed, 3 unchanged, 0 allow → deny"),
        "{out}"
    );
    let (code, out, err) = sh(d, &cmds[5], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains(&format!("```\n{out}```")),
        "not on the page:\n{out}"
    );

    // 4. policy test, with the outputs the page shows.
    let (code, out, err) = sh(d, &cmds[6], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let rule = "rule:     transforms[0].config.rules[0] (allowlist) at enforce.yaml:16";
    assert!(out.contains(rule) && page.contains(rule), "{out}");
    let (code, out, _) = sh(d, &cmds[7], &[]);
    assert_eq!(code, 1, "{out}");
    let rule = "transforms[0] (allowlist: no rule matched) at\nenforce.yaml:11";
    assert!(out.contains(&rule.replace('\n', " ")), "{out}");
    assert!(page.contains(rule));

    // 5. replay: unchanged against enforce.yaml, a flip against candidate.yaml.
    let (code, out, err) = sh(d, &cmds[8], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 recorded requests: 3 replayed, 3 unchanged, 0 allow → deny"),
        "{out}"
    );
    let (code, out, err) = sh(d, &cmds[9], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let flip = &r["allow_to_deny"][0];
    assert_eq!(flip["host"], format!("pypi.org:{port}"));
    assert_eq!(flip["count"], 1);
    let rule = "transforms[0] (allowlist: no rule matched) at candidate.yaml:7";
    assert_eq!(flip["rule"], rule);
    assert!(page.contains(rule));
    assert_eq!(r["allow_to_deny"].as_array().unwrap().len(), 1, "{r}");
}

/// What `policy test` says of a request is what the running agent does with it, and replay of
/// the enforcing agent's own log against its own config changes nothing.
#[test]
fn dry_run_agrees_with_the_running_agent() {
    let page = page();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(sh(d, "iron-agent generate-ca --outdir ./ca", &[]).0, 0);
    let enforce = yaml_after(&page, "Save as `enforce.yaml`");
    std::fs::write(d.join("enforce.yaml"), &enforce).unwrap();
    let rt = iron_agent_tests::runtime();
    let (origin, zone) = rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let z = fake_zone(&[("api.github.com", "127.0.0.1"), ("pypi.org", "127.0.0.1")]).await;
        (o, z)
    });
    let port = origin.port();
    let agent = start(d, &enforce, zone);
    let extra = [
        ("DELETE", "api.github.com", "/repos/octo/hello"),
        ("GET", "api.github.com", "/user"),
        ("POST", "api.github.com", "/repos/octo/hello/issues"),
        ("GET", "evil.example", "/"),
    ];
    rt.block_on(job(&agent, port, &extra));
    let audits = agent.wait_audits(7);
    std::fs::write(d.join("enforced.jsonl"), agent.logs()).unwrap();
    for a in &audits {
        let host = a["host"].as_str().unwrap().split(':').next().unwrap();
        let line = format!(
            "iron-agent policy test --config enforce.yaml {} http://{host}:{port}{}",
            a["method"].as_str().unwrap(),
            a["path"].as_str().unwrap()
        );
        let (code, out, err) = sh(d, &line, &[]);
        let want = if a["action"] == "reject" { 1 } else { 0 };
        assert_eq!(code, want, "{line}: agent said {a}\n{out}{err}");
    }
    assert_eq!(audits.iter().filter(|a| a["action"] == "reject").count(), 4);
    let (code, out, err) = sh(
        d,
        "iron-agent policy replay enforced.jsonl --config enforce.yaml --format json",
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["replayed"].as_u64(), r["unchanged"].as_u64()),
        (Some(7), Some(7)),
        "{r}"
    );
    // The summary of the enforcing run names the denied requests.
    let (_, out, _) = sh(d, "iron-agent summary enforced.jsonl --format json", &[]);
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (s["allowed"].as_u64(), s["denied"].as_u64()),
        (Some(3), Some(4)),
        "{s}"
    );
    let gh = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["host"] == format!("api.github.com:{port}"))
        .unwrap();
    let samples: Vec<&str> = gh["denied_samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        samples.contains(&"DELETE /repos/octo/hello (allowlist)"),
        "{samples:?}"
    );
}

/// No DNS query, no connection, no secret value read or printed; identities pick their policy.
#[test]
fn dry_run_contacts_nothing_and_names_secrets_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    dns.set_nonblocking(true).unwrap();
    let config = format!(
        r#"dns:
  proxy_ip: 127.0.0.1
  upstream_resolver: "{}"
tls: {{ca_cert: /nonexistent/ca.crt, ca_key: /nonexistent/ca.key}}
transforms:
  - name: allowlist
    config:
      domains: [api.example.test]
      cidrs: [127.0.0.0/8]
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: GH_TOKEN}}
          inject: {{header: Authorization, formatter: "Bearer {{{{ .Value }}}}"}}
          rules: [{{host: api.example.test}}, {{cidr: 127.0.0.0/8}}]
intercept:
  mode: ebpf
  policies:
    - name: ci
      users: [ci]
      transforms:
        - name: allowlist
          config: {{domains: [ci.example.test]}}
"#,
        dns.local_addr().unwrap()
    );
    std::fs::write(d.join("c.yaml"), config).unwrap();
    let secret = "gh-real-value-never-shown";
    let line = format!(
        "iron-agent policy test --config c.yaml --format json GET http://127.0.0.1:{port}/x https://api.example.test/y"
    );
    let (code, out, err) = sh(d, &line, &[("GH_TOKEN", secret)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(secret) && !err.contains(secret));
    let r: Vec<Value> = serde_json::from_str(&out).unwrap();
    for one in &r {
        assert_eq!(one["decision"], "allow", "{one}");
        assert_eq!(one["secrets"], serde_json::json!(["GH_TOKEN"]), "{one}");
        assert_eq!(one["transforms"][1]["action"], "allow");
    }
    assert_eq!(r[0]["decided_by"]["rule"], "cidrs[0]");
    assert_eq!(r[0]["decided_by"]["location"], "c.yaml:9");
    assert_eq!(r[1]["decided_by"]["location"], "c.yaml:8");
    // Nothing reached the "upstream" or the resolver.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    let mut buf = [0u8; 512];
    assert_eq!(
        dns.recv_from(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    // `--identity user:ci` is judged by the `ci` policy.
    let (code, out, _) = sh(
        d,
        "iron-agent policy test --config c.yaml --identity user:ci https://ci.example.test/ https://api.example.test/",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policy:   intercept.policies[0] (ci) at c.yaml:19"),
        "{out}"
    );
    assert!(
        out.contains(
            "intercept.policies[0].transforms[0].config.domains[0] (allowlist) at c.yaml:23"
        ),
        "{out}"
    );
    let (code, _, err) = sh(
        d,
        "iron-agent policy test --config c.yaml --identity policy:nope https://a.test/",
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no intercept.policies entry"), "{err}");
    let (code, _, err) = sh(
        d,
        "iron-agent policy test --config missing.yaml https://a.test/",
        &[],
    );
    assert_eq!(code, 2, "{err}");
}
