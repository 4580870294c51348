use serde_json::json;

use super::*;
use crate::config::transforms::TRANSFORM_NAMES;
use crate::mint::TokenHttp;
use crate::secrets::SecretRegistry;
use crate::transform::BuildProblem;

fn entry(v: serde_json::Value) -> TransformEntry {
    serde_json::from_value(v).unwrap()
}

fn build(entries: &[TransformEntry]) -> Result<Pipeline, Vec<BuildError>> {
    build_in(entries, &mut SecretRegistry::default())
}

/// Builds with a detached token client: nothing here mints.
fn build_in(
    entries: &[TransformEntry],
    secrets: &mut SecretRegistry,
) -> Result<Pipeline, Vec<BuildError>> {
    let mint = Arc::new(TokenHttp::detached());
    build_pipeline(entries, &mut BuildContext::new(secrets, &mint))
}

fn messages(errs: &[BuildError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn every_registered_kind_builds_or_is_refused_by_name() {
    for kind in TRANSFORM_NAMES {
        let spec = TransformSpec::default_for(kind).unwrap();
        let e = TransformEntry {
            name: kind.to_string(),
            spec,
        };
        match build(std::slice::from_ref(&e)) {
            Ok(p) => assert_eq!(p.describe(), kind, "a built kind runs under its own name"),
            Err(errs) => {
                assert_eq!(errs.len(), 1, "{kind}: {errs:?}");
                let msg = errs[0].to_string();
                assert!(msg.starts_with("transforms[0]"), "{kind}: {msg}");
            }
        }
    }
}

#[test]
fn grpc_build_errors_name_the_field() {
    let errs = build(&[
        entry(json!({"name": "allowlist", "config": {"domains": ["a.test"]}})),
        entry(json!({"name": "grpc", "config": {"name": "p", "target": "no-port"}})),
        entry(
            json!({"name": "grpc", "config": {"name": "q", "target": "localhost:1",
            "tls": {"enabled": true, "ca_cert": "/nonexistent/ca.pem"}}}),
        ),
    ])
    .unwrap_err();
    let msgs = messages(&errs);
    assert_eq!(
        msgs[0],
        "transforms[1].config.target: is not a host:port dial target"
    );
    assert!(
        msgs[1].starts_with("transforms[2].config.tls.ca_cert: reading /nonexistent/ca.pem: "),
        "{msgs:?}"
    );
}

#[test]
fn build_errors_name_the_field_and_every_bad_entry_is_reported() {
    let errs = build(&[
        entry(json!({"name": "secrets", "config": {"secrets": [{"inject": {"header": "x"}}]}})),
        entry(json!({"name": "annotate"})),
        entry(json!({"name": "oauth_token", "config": {"tokens": [{
            "token_endpoint": "not a url",
            "grant": "client_credentials",
        }]}})),
        entry(json!({"name": "hmac_sign"})),
    ])
    .unwrap_err();
    assert_eq!(
        messages(&errs),
        [
            "transforms[0].config.secrets[0]: source is required",
            "transforms[2].config.tokens[0].token_endpoint: is not a valid URL",
            "transforms[3].config.credentials: must include \"secret\" (the HMAC key)",
        ]
    );
    // The typed cause stays reachable for callers that classify.
    let BuildError::Invalid { source, .. } = &errs[1] else {
        panic!("expected an invalid entry");
    };
    assert_eq!(source.field, "tokens[0].token_endpoint");
    assert!(matches!(source.problem, BuildProblem::Invalid(_)));
}

#[test]
fn a_template_error_keeps_its_source() {
    let errs = build(&[entry(json!({"name": "secrets", "config": {"secrets": [{
        "source": {"type": "env", "var": "X"},
        "inject": {"header": "authorization", "formatter": "Bearer {{ .Nope"},
    }]}}))])
    .unwrap_err();
    let BuildError::Invalid { source, .. } = &errs[0] else {
        panic!("expected an invalid entry");
    };
    assert!(matches!(source.problem, BuildProblem::FormatterTemplate(_)));
    assert!(std::error::Error::source(&source.problem).is_some());
    assert!(
        errs[0]
            .to_string()
            .starts_with("transforms[0].config.secrets[0]: parsing formatter template: "),
        "{}",
        errs[0]
    );
}

#[test]
fn a_pipeline_keeps_config_order_and_registers_secrets() {
    let mut secrets = SecretRegistry::default();
    let p = build_in(
        &[
            entry(json!({"name": "allowlist", "config": {"domains": ["a.test"]}})),
            entry(json!({"name": "secrets", "config": {"secrets": [{
                "source": {"type": "env", "var": "REGISTRY_TEST_VAR"},
                "inject": {"header": "x-key"},
            }]}})),
            entry(json!({"name": "header_allowlist", "config": {"headers": ["x-key"]}})),
        ],
        &mut secrets,
    )
    .unwrap();
    assert_eq!(p.describe(), "allowlist → secrets → header_allowlist");
    assert!(
        !secrets.is_empty(),
        "the secrets transform registered its source"
    );
}
