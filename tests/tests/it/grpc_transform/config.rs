//! `grpc` config through `check-config`: errors naming the field (validation and build), the
//! transform inside `intercept.policies[i].transforms`, and the documented example.

use std::process::Command;

use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::{AgentConfig, TestCa, Transform};
use serde_json::{Value, json};

fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(agent_bin())
        // The documented example names the installed CA paths (/etc/iron-agent): judge the
        // config, not this host.
        .args([
            "check-config",
            "--config",
            path.to_str().unwrap(),
            "--no-host-checks",
        ])
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_with(transforms: Vec<Transform>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("c").write(dir.path());
    let yaml = AgentConfig::loopback(&c, &k)
        .transforms(transforms)
        .to_yaml();
    std::mem::forget(dir); // the CA files must outlive the check
    yaml
}

#[test]
fn config_errors_name_the_field() {
    let t = |cfg: Value| Transform::new("grpc", cfg);
    let yaml = config_with(vec![
        t(json!({"send_request_body": true})),
        t(
            json!({"name": "a", "target": "localhost:1", "tls": {"enabled": true, "cert": "/c"}, "timeout": "0s"}),
        ),
        t(json!({"name": "b", "target": "no-port-here"})),
        t(
            json!({"name": "c", "target": "localhost:1", "tls": {"enabled": true, "ca_cert": "/nonexistent/ca.pem"}}),
        ),
        t(json!({"name": "d", "target": "localhost:1", "deadline": "1s"})),
    ]);
    let (code, err) = check_config(&yaml);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "transforms[0].config.name: is required",
        "transforms[0].config.target: is required",
        "transforms[1].config.tls: cert and key must be set together for mTLS",
        "transforms[1].config.timeout: must be greater than zero",
        "transforms[4].config",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("deadline"), "{err}");
    assert!(!err.contains("not supported yet"), "{err}");

    // Errors found when the transform is built (after validation passes).
    let yaml = config_with(vec![
        t(json!({"name": "b", "target": "no-port-here"})),
        t(
            json!({"name": "c", "target": "localhost:1", "tls": {"enabled": true, "ca_cert": "/nonexistent/ca.pem"}}),
        ),
    ]);
    let (code, err) = check_config(&yaml);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "transforms[0].config.target: is not a host:port dial target",
        "transforms[1].config.tls.ca_cert: reading /nonexistent/ca.pem: ",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// `grpc` inside an identity profile (`intercept.policies[i].transforms`) builds like the top
/// level, and its errors carry the profile's path.
#[test]
fn works_in_intercept_policies() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("c").write(dir.path());
    let yaml = AgentConfig::loopback(&c, &k).to_yaml();
    let with_policy = |grpc_cfg: &str| {
        format!(
            "{yaml}intercept:\n  mode: ebpf\n  policies:\n    - uids: [4242]\n      transforms:\n\
             \x20       - name: grpc\n          config: {grpc_cfg}\n"
        )
    };
    let (code, err) = check_config(&with_policy(
        "{name: p, target: 'localhost:9500', send_request_body: true}",
    ));
    assert_eq!(code, 0, "{err}");
    let (code, err) = check_config(&with_policy("{name: p, target: 'nope'}"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("intercept.policies[0].transforms[0].config.target"),
        "{err}"
    );
}

/// The example in docs/transforms/grpc.md passes `check-config` (its certificate paths exist).
#[test]
fn documented_example_is_a_valid_config() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/transforms/grpc.md"),
    )
    .unwrap();
    let start = doc.find("```yaml\n").expect("a yaml example") + "```yaml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    assert!(example.contains("name: grpc"), "{example}");
    let (code, err) = check_config(example);
    assert_eq!(code, 0, "{err}\n{example}");
}
