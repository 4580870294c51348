//! Checks of the shared test support itself (`iron-agent-tests`' library has no test harness
//! of its own: everything runs in this binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use iron_agent_tests::{AgentConfig, Transform};
use serde_json::{Value, json};

/// What the agent parses is what the test built: the YAML reads back as the same value,
/// including strings YAML would otherwise take for something else.
#[test]
fn yaml_reads_back_as_the_same_value() {
    let cfg = AgentConfig::loopback(Path::new("/tmp/ca dir/ca.crt"), Path::new("/k"))
        .tunnel_listener()
        .transforms([
            Transform::allowlist(&["*.test", "localhost", "true", "1.5", "null", "a: b"]),
            Transform::new(
                "x",
                json!({"n": 8, "b": true, "s": "#x", "e": "", "l": [], "m": {}}),
            ),
        ]);
    let yaml = cfg.to_yaml();
    let back: Value = serde_saphyr::from_str(&yaml).expect("parses");
    assert_eq!(back, serde_json::to_value(&cfg).unwrap(), "{yaml}");
}

#[test]
fn absent_means_absent() {
    let mut cfg = AgentConfig::loopback(Path::new("/c"), Path::new("/k"));
    cfg.proxy.upstream_deny_cidrs = None;
    let v = serde_json::to_value(&cfg).unwrap();
    assert!(v["proxy"].get("upstream_deny_cidrs").is_none());
    assert!(v.get("intercept").is_none());
    assert_eq!(v["dns"], json!({"enabled": false}));
}
