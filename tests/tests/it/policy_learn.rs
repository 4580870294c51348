//! Learn mode, `policy suggest` and `run --learn --summary FILE` on audit logs the running
//! agent writes: learn → suggest → enforce → replay in one test.

use std::path::Path;
use std::time::Duration;

use iron_agent_tests::agent::{agent_command, generate_ca, wait_finished};
use iron_agent_tests::config::Log;
use iron_agent_tests::dns::fake_zone;
use iron_agent_tests::netns::root_turn;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, Transform, http_request};
use serde_json::Value;

use super::{builder, req, sh};

const GH_VALUE: &str = "gh-learn-value-never-shown";

/// The observed job's pipeline: an allowlist in learn mode that knows only pypi.org, and a
/// credential for api.github.com only.
const OBSERVE: &str = r#"dns:
  proxy_ip: 127.0.0.1
tls:
  ca_cert: "ca/ca.crt"
  ca_key: "ca/ca.key"
transforms:
  - name: allowlist
    config:
      mode: learn
      domains: [pypi.org]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: IA_LEARN_GH}
          inject: {header: X-Gh-Token}
          rules: [{host: api.github.com}]
"#;

/// (method, host, path) of the job.
const JOB: [(&str, &str, &str); 8] = [
    ("GET", "api.github.com", "/repos/octo/pulls"),
    ("GET", "api.github.com", "/repos/hello/pulls"),
    ("GET", "api.github.com", "/repos/world/pulls"),
    ("POST", "api.github.com", "/repos/octo/issues/17"),
    ("GET", "pypi.org", "/simple/requests/"),
    ("GET", "a.pkg.test", "/files/x"),
    ("GET", "b.pkg.test", "/files/y"),
    ("GET", "c.pkg.test", "/files/z"),
];

/// Sends `reqs` through the agent's HTTP listener; the replies by request.
async fn send(agent: &Agent, port: u16, reqs: &[(&str, &str, &str)]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for (m, h, p) in reqs {
        let r = http_request(agent.addr("http"), req(m, &format!("{h}:{port}"), p)).await;
        out.push((r.status, r.text()));
    }
    out
}

fn allowlist_trace(a: &Value) -> &Value {
    a["request_transforms"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "allowlist"))
        .unwrap_or(&Value::Null)
}

fn observe(d: &Path, zone: std::net::SocketAddr, port: u16, rt: &tokio::runtime::Runtime) {
    let config = std::fs::read_to_string(d.join("observe.yaml")).unwrap();
    let agent = builder(d, &config, zone)
        .env("IA_LEARN_GH", GH_VALUE)
        .start();
    assert!(agent.wait_for_log("LEARNING MODE"), "{}", agent.logs());
    let mut job = JOB.to_vec();
    // Learn mode relaxes the allowlist only: the deny list still refuses this address.
    job.push(("GET", "meta.test", "/latest"));
    let replies = rt.block_on(send(&agent, port, &job));
    let audits = agent.wait_audits(job.len());
    std::fs::write(d.join("audit.jsonl"), agent.logs()).unwrap();
    for a in &audits {
        let host = a["host"].as_str().unwrap();
        let learned = allowlist_trace(a)["annotations"]["learn"] == "would_deny";
        assert_eq!(learned, !host.starts_with("pypi.org"), "{a}");
        if host.starts_with("meta.test") {
            assert_eq!(a["action"], "error", "{a}");
            assert!(a["error"].as_str().unwrap().contains("upstream_deny_cidrs"));
        } else {
            assert_eq!(a["action"], "allow", "{a}");
        }
    }
    // The credential goes where its own rules say, learn mode or not.
    for ((_, host, _), (status, echo)) in job.iter().zip(&replies).take(JOB.len()) {
        assert_eq!(*status, 200, "{host}");
        let has = echo.to_ascii_lowercase().contains("x-gh-token");
        assert_eq!(has, *host == "api.github.com", "{host}");
    }
    agent.assert_not_logged(GH_VALUE);
}

#[test]
fn learn_suggest_enforce_replay_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(sh(d, "iron-agent generate-ca --outdir ./ca", &[]).0, 0);
    // Absolute CA paths: the suggestion re-serialises the file, quoting as it sees fit.
    let observe_yaml = OBSERVE
        .replace("\"ca/ca.crt\"", &format!("{:?}", d.join("ca/ca.crt")))
        .replace("\"ca/ca.key\"", &format!("{:?}", d.join("ca/ca.key")));
    std::fs::write(d.join("observe.yaml"), observe_yaml).unwrap();
    let rt = iron_agent_tests::runtime();
    let (origin, zone) = rt.block_on(async {
        let o = Origin::start(OriginKind::Http, None).await;
        let mut names: Vec<(&str, &str)> = JOB.iter().map(|j| (j.1, "127.0.0.1")).collect();
        names.extend([("new.test", "127.0.0.1"), ("meta.test", "192.0.2.1")]);
        (o, fake_zone(&names).await)
    });
    let port = origin.port();
    observe(d, zone, port, &rt);

    // The dry run says why an unknown host passes.
    let (code, out, _) = sh(
        d,
        "iron-agent policy test --config observe.yaml GET http://new.test/",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("allowed only because the allowlist has `mode: learn`"),
        "{out}"
    );

    // Suggest, into the observed config: ready to run.
    let (code, yaml, err) = sh(
        d,
        "iron-agent policy suggest audit.jsonl --config observe.yaml",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    for want in [
        "\"/repos/*/pulls\"  # 3 requests",
        "\"*.pkg.test\"",
        "8 of them passed only because the allowlist did not enforce",
        "name: secrets",
    ] {
        assert!(yaml.contains(want), "{want:?} not in\n{yaml}");
    }
    assert!(!yaml.contains("mode: learn"), "{yaml}");
    std::fs::write(d.join("enforce.yaml"), &yaml).unwrap();
    assert_eq!(
        sh(
            d,
            "iron-agent check-config --config enforce.yaml --no-host-checks",
            &[]
        )
        .0,
        0
    );
    // Replay: nothing the job did flips to denied; the suggestion equals itself.
    let (code, out, err) = sh(
        d,
        "iron-agent policy replay audit.jsonl --config enforce.yaml --format json",
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["replayed"].as_u64(), Some(9), "{r}");
    assert_eq!(r["allow_to_deny"].as_array().unwrap().len(), 0, "{r}");
    let (code, out, _) = sh(
        d,
        "iron-agent policy suggest audit.jsonl --format json",
        &[],
    );
    assert_eq!(code, 0);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["records"].as_u64(), j["would_deny"].as_u64()),
        (Some(9), Some(8))
    );
    let rules = j["pipelines"][0]["rules"].as_array().unwrap();
    let pulls = rules
        .iter()
        .find(|r| r["paths"][0]["path"] == "/repos/*/pulls")
        .unwrap();
    assert_eq!(pulls["requests"], 3, "{pulls}");
    let (code, out, _) = sh(
        d,
        "iron-agent policy suggest audit.jsonl --diff enforce.yaml",
        &[],
    );
    assert_eq!(code, 0);
    assert!(out.contains(": 0 changes."), "{out}");
    let (_, out, _) = sh(
        d,
        "iron-agent policy suggest audit.jsonl --diff observe.yaml",
        &[],
    );
    assert!(
        out.contains("+ rule GET api.github.com /repos/*/pulls"),
        "{out}"
    );
    assert!(out.contains("- domain pypi.org"), "{out}");

    // Enforce: the job passes again, a new host and a new method do not.
    let agent = builder(d, &yaml, zone).env("IA_LEARN_GH", GH_VALUE).start();
    let mut job = JOB.to_vec();
    job.extend([
        ("GET", "api.github.com", "/repos/other/pulls"),
        ("GET", "new.test", "/"),
        ("DELETE", "api.github.com", "/repos/octo/pulls"),
    ]);
    let replies = rt.block_on(send(&agent, port, &job));
    let audits = agent.wait_audits(job.len());
    for (a, (_, host, _)) in audits.iter().zip(&job) {
        let denied = a["action"] == "reject";
        let new = host == &"new.test" || a["method"] == "DELETE";
        assert_eq!(denied, new, "{a}");
        assert!(allowlist_trace(a)["annotations"].is_null(), "{a}");
    }
    assert!(replies[0].1.to_ascii_lowercase().contains("x-gh-token"));
}

#[test]
fn suggest_errors_exit_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"msg\":\"listening\"}\n{\"msg\":\"request\",\"action\":\"allow\",\"host\":7}\n",
    )
    .unwrap();
    let (code, _, err) = sh(d, "iron-agent policy suggest bad.jsonl", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.jsonl:2:") && err.contains("`host`"),
        "{err}"
    );
    let (code, _, err) = sh(d, "iron-agent policy suggest missing.jsonl", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.jsonl"), "{err}");
}

/// `run --learn --summary FILE -- CMD`: CMD's request the allowlist would deny is let through
/// (and then refused by the deny list), the summary is appended to FILE, and the exit status
/// is CMD's.
#[test]
fn jail_learns_and_appends_its_summary() {
    let Some(_turn) = root_turn("attaches eBPF programs to a jail cgroup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = generate_ca(dir.path());
    let cfg = AgentConfig::jail(&c, &k)
        .transforms([Transform::allowlist(&["a.test"])])
        .with(|c| {
            c.proxy.upstream_deny_cidrs = Some(vec!["192.0.2.0/24".into()]);
            c.log = Some(Log {
                level: "warn".into(),
            });
        })
        .write(&dir.path().join("jail.yaml"));
    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "previous step\n").unwrap();
    let child = agent_command(&["run", "--learn", "--config", cfg.to_str().unwrap()])
        .arg("--summary")
        .arg(&summary)
        .args(["--", "/bin/sh", "-c"])
        .arg("curl -s -o /dev/null -m 10 http://192.0.2.1/learned; exit 3")
        .spawn()
        .unwrap();
    let out = wait_finished(child, Duration::from_secs(60), "iron-agent run");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("LEARNING MODE"), "{}", out.stderr);
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.starts_with("previous step\n## Egress summary\n"),
        "{text}"
    );
    assert!(
        text.contains("1 requests: 0 allowed, 0 denied, 1 errors"),
        "{text}\n{}",
        out.stderr
    );
    assert!(text.contains("| 192.0.2.1 | 0 | 0 | 1 |"), "{text}");
}
