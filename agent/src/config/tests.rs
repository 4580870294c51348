//! Config loading tests: the documented examples load, and each error class names its path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use super::transforms::secrets::SecretMode;
use super::transforms::*;
use super::*;

const FULL_EXAMPLE: &str = include_str!("testdata/full_example.yaml");
const ALL_KINDS: &str = include_str!("testdata/all_kinds.yaml");

/// An environment holding exactly `vars`.
fn env_with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn full_env() -> impl Fn(&str) -> Option<String> {
    env_with(&[
        ("IRON_MANAGEMENT_API_KEY", "secret"),
        ("ANTHROPIC_API_KEY", "k"),
        ("OPENAI_API_KEY", "k"),
    ])
}

/// Loads `text` and returns its errors (panics if it loads).
fn errors_of(text: &str) -> Vec<ConfigError> {
    match load_str(text, &full_env()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// The single error at `path`, with a helpful panic listing every error otherwise.
fn error_at<'a>(errs: &'a [ConfigError], path: &str) -> &'a ConfigError {
    let hits: Vec<_> = errs.iter().filter(|e| e.path == path).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one error at {path}, got: {errs:#?}"
    );
    hits[0]
}

/// Minimal valid prelude so tests only show what they exercise.
const PRELUDE: &str = "dns:\n  proxy_ip: 10.0.0.2\ntls:\n  mode: sni-only\n";

#[test]
fn full_example_loads() {
    let cfg = load_str(FULL_EXAMPLE, &full_env()).unwrap();
    assert_eq!(cfg.dns.proxy_ip, Some("172.20.0.2".parse().unwrap()));
    assert_eq!(cfg.dns.records[0].kind, DnsRecordType::A);
    assert_eq!(cfg.proxy.effective_deny_cidrs().len(), 4);
    assert_eq!(cfg.tls.mode, TlsMode::Mitm);
    let kinds: Vec<_> = cfg.transforms.iter().map(|t| t.spec.kind()).collect();
    assert_eq!(
        kinds,
        [
            "allowlist",
            "secrets",
            "annotate",
            "grpc",
            "judge",
            "header_allowlist"
        ]
    );
    for t in &cfg.transforms {
        assert_eq!(t.name, t.spec.kind());
    }
    let TransformSpec::Secrets(s) = &cfg.transforms[1].spec else {
        panic!()
    };
    assert_eq!(s.secrets.len(), 3);
    assert!(
        matches!(s.secrets[0].mode(), Some(SecretMode::Inject(ref i)) if i.header.as_deref() == Some("Authorization"))
    );
    let src = s.secrets[1].source.as_ref().unwrap();
    assert_eq!(src.kind(), "aws_sm");
    assert_eq!(src.ttl(), Some(std::time::Duration::from_secs(300)));
    let TransformSpec::Judge(j) = &cfg.transforms[4].spec else {
        panic!()
    };
    assert_eq!(
        j.provider.as_ref().unwrap().kind,
        Some(JudgeProviderType::Anthropic)
    );
    assert!(j.prompt.starts_with("Allow writes"));
    assert_eq!(j.max_concurrent, 100);
    let mcp = cfg.mcp.as_ref().unwrap();
    assert_eq!(mcp.error.code, -32001);
    assert_eq!(
        mcp.servers[0].tools[1].when[1].in_.as_ref().unwrap().len(),
        1
    );
    assert_eq!(
        cfg.management.effective_api_key_env(),
        Some("IRON_MANAGEMENT_API_KEY")
    );
    // The example has an allowlist and scoped secrets: nothing to warn about.
    assert!(
        validate_warnings(&cfg).is_empty(),
        "{:?}",
        validate_warnings(&cfg)
    );
}

#[test]
fn every_kind_and_source_loads() {
    let cfg = load_str(ALL_KINDS, &full_env()).unwrap();
    let kinds: Vec<_> = cfg.transforms.iter().map(|t| t.spec.kind()).collect();
    for k in TRANSFORM_NAMES {
        if !["annotate", "grpc", "header_allowlist"].contains(&k) {
            assert!(kinds.contains(&k), "{k} missing from fixture");
        }
    }
    let TransformSpec::Secrets(s) = &cfg.transforms[1].spec else {
        panic!()
    };
    let legacy = s.secrets[0].mode().unwrap();
    assert!(
        matches!(legacy, SecretMode::Replace(ref r) if r.proxy_value == "legacy-token" && r.require && r.match_body)
    );
    let file = s.secrets[0].source.as_ref().unwrap();
    assert_eq!(file.ttl(), None, "ttl: 0 means no refresh");
    assert_eq!(file.failure_ttl(), std::time::Duration::from_secs(30));
    assert_eq!(file.json_key(), Some("key"));
    let TransformSpec::OauthToken(o) = &cfg.transforms[3].spec else {
        panic!()
    };
    assert_eq!(o.tokens[2].header(), "X-Auth");
    assert_eq!(o.tokens[0].value_prefix(), "Bearer ");
    let TransformSpec::GcpIdToken(g) = &cfg.transforms[6].spec else {
        panic!()
    };
    assert_eq!(g.header_name(), "X-Serverless-Authorization");
    let TransformSpec::AwsAuth(a) = &cfg.transforms[7].spec else {
        panic!()
    };
    let Some(SecretSource::AwsSsm(ssm)) = &a.session_token else {
        panic!()
    };
    assert!(!ssm.with_decryption);
    let TransformSpec::HmacSign(h) = &cfg.transforms[9].spec else {
        panic!()
    };
    assert_eq!(h.credentials.len(), 3);
    let w = validate_warnings(&cfg);
    assert!(
        w.iter().any(|w| w.starts_with("transforms[0].config.warn")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("transforms[5].config.rules")),
        "{w:?}"
    );
}

#[test]
fn empty_document_is_the_default_config() {
    let cfg = parse("").unwrap();
    assert!(cfg.dns.enabled);
    let cfg = parse("# only a comment\n").unwrap();
    assert!(cfg.transforms.is_empty());
}

#[test]
fn default_deny_list_covers_unspecified_and_link_local() {
    let cfg = load_str(PRELUDE, &env_with(&[])).unwrap();
    let deny = crate::upstream::DenyList::new(cfg.proxy.effective_deny_cidrs());
    for ip in [
        "169.254.169.254",
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "0.1.2.3",
        "::",
        "169.254.1.1",
        "fe80::1",
        "febf::1",
        "::ffff:169.254.0.1",
        "fd00:ec2::254",
    ] {
        assert!(
            deny.check(ip.parse().unwrap()).is_some(),
            "{ip} must be denied"
        );
    }
    for ip in ["1.1.1.1", "169.255.0.1", "fec0::1", "2001:db8::1", "::2"] {
        assert!(deny.check(ip.parse().unwrap()).is_none(), "{ip} must pass");
    }
    // An explicit list replaces the defaults, as in iron-proxy.
    let yaml = format!("{PRELUDE}proxy:\n  upstream_deny_cidrs: [\"10.0.0.0/8\"]\n");
    let cfg = load_str(&yaml, &env_with(&[])).unwrap();
    assert_eq!(cfg.proxy.effective_deny_cidrs().len(), 1);
}

#[test]
fn unknown_key_in_transform_config_names_path_and_location() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: allowlist\n    config:\n      domains: [a.example]\n  \
         - name: secrets\n    config:\n      match_header: x\n"
    );
    let errs = errors_of(&text);
    let e = error_at(&errs, "transforms[1].config.match_header");
    assert!(
        e.message
            .starts_with("unknown field `match_header`, expected"),
        "{e}"
    );
    assert!(e.message.contains("secrets"), "{e}");
    let loc = e.location.expect("location");
    assert_eq!((loc.line, loc.column), (11, 7));
    assert!(e.to_string().contains("(line 11, column 7)"));
}

#[test]
fn unknown_key_inside_secret_source_names_the_key() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: \
         {{type: env, vaar: X}}\n          inject: {{header: A}}\n          rules: [{{host: a}}]\n"
    );
    let errs = errors_of(&text);
    let e = error_at(&errs, "transforms[0].config.secrets[0].source.vaar");
    assert!(e.message.contains("unknown field `vaar`"), "{e}");
}

#[test]
fn unknown_source_type_lists_the_valid_ones() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: \
         {{type: vault, path: x}}\n          inject: {{header: A}}\n"
    );
    let errs = errors_of(&text);
    let e = error_at(&errs, "transforms[0].config.secrets[0].source.type");
    assert!(e.message.contains("unknown variant `vault`"), "{e}");
    assert!(e.message.contains("1password_connect"), "{e}");
}

#[test]
fn config_before_name_still_decodes_with_location() {
    let text =
        format!("{PRELUDE}transforms:\n  - config:\n      domainz: [a]\n    name: allowlist\n");
    let errs = errors_of(&text);
    let e = error_at(&errs, "transforms[0].config.domainz");
    assert!(e.location.is_some(), "{e}");
    let ok =
        format!("{PRELUDE}transforms:\n  - config:\n      domains: [a]\n    name: allowlist\n");
    assert!(load_str(&ok, &full_env()).is_ok());
}

#[test]
fn unknown_transform_name_lists_valid_names() {
    let text = format!("{PRELUDE}transforms:\n  - name: allow_list\n    config: {{}}\n");
    let errs = errors_of(&text);
    let e = error_at(&errs, "transforms[0].name");
    assert!(
        e.message.contains("unknown transform \"allow_list\""),
        "{e}"
    );
    for n in TRANSFORM_NAMES {
        assert!(e.message.contains(n), "{e}");
    }
    assert!(e.location.is_some());
}

#[test]
fn unknown_entry_key_and_missing_name() {
    let text = format!("{PRELUDE}transforms:\n  - nme: allowlist\n    config: {{}}\n");
    let errs = errors_of(&text);
    assert!(
        error_at(&errs, "transforms[0].nme")
            .message
            .contains("unknown field `nme`")
    );
    assert_eq!(error_at(&errs, "transforms[0].name").message, "is required");
}

#[test]
fn two_bad_transforms_yield_two_errors() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: allowlist\n    config:\n      domain: [a]\n  \
         - name: header_allowlist\n    config:\n      headers: [A]\n  - name: grpc\n    \
         config:\n      target: x\n      bogus: 1\n"
    );
    let errs = errors_of(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    error_at(&errs, "transforms[0].config.domain");
    error_at(&errs, "transforms[2].config.bogus");
}

#[test]
fn structural_and_semantic_errors_are_reported_together() {
    // A bad block, a bad transform, and semantic errors elsewhere all come back at once; the
    // failed dns block does not add a spurious "proxy_ip is required".
    let text = "dns:\n  proxy_ipp: 1.2.3.4\nlog:\n  level: verbose\ntransforms:\n  \
                - name: allowlist\n    config:\n      cidrs: [10.0.0.1]\n  - name: annotate\n    \
                config: {}\n  - name: judge\n    config:\n      prompt: p\n";
    let errs = errors_of(text);
    error_at(&errs, "dns.proxy_ipp");
    error_at(&errs, "log.level");
    error_at(&errs, "transforms[0].config.cidrs[0]");
    error_at(&errs, "transforms[1].config.annotations");
    error_at(&errs, "transforms[2].config.name");
    error_at(&errs, "transforms[2].config.provider");
    error_at(&errs, "tls.ca_cert");
    assert!(!errs.iter().any(|e| e.path == "dns.proxy_ip"), "{errs:#?}");
}

#[test]
fn bare_ip_is_not_a_cidr() {
    let text = format!("{PRELUDE}proxy:\n  upstream_deny_cidrs: [\"10.0.0.1\"]\n");
    let errs = errors_of(&text);
    let e = error_at(&errs, "proxy.upstream_deny_cidrs[0]");
    assert!(e.message.contains("must be CIDR notation"), "{e}");
    let text = format!(
        "{PRELUDE}transforms:\n  - name: allowlist\n    config:\n      rules:\n        - cidr: 10.0.0.1\n"
    );
    let errs = errors_of(&text);
    assert!(
        error_at(&errs, "transforms[0].config.rules[0].cidr")
            .message
            .contains("must be CIDR notation")
    );
}

#[test]
fn dns_enabled_requires_proxy_ip() {
    let errs = errors_of("tls:\n  mode: sni-only\n");
    assert_eq!(
        error_at(&errs, "dns.proxy_ip").message,
        "is required when dns is enabled"
    );
    assert!(
        load_str(
            "dns:\n  enabled: false\ntls:\n  mode: sni-only\n",
            &full_env()
        )
        .is_ok()
    );
}

#[test]
fn bad_log_level() {
    let errs = errors_of(&format!("{PRELUDE}log:\n  level: verbose\n"));
    let e = error_at(&errs, "log.level");
    assert!(
        e.message.starts_with("unknown log level: \"verbose\""),
        "{e}"
    );
    assert_eq!(e.location.map(|l| l.line), Some(6));
}

#[test]
fn bad_duration() {
    let errs = errors_of(&format!(
        "{PRELUDE}proxy:\n  upstream_response_header_timeout: 30\n"
    ));
    let e = error_at(&errs, "proxy.upstream_response_header_timeout");
    assert!(e.message.starts_with("invalid duration \"30\""), "{e}");
    let errs = errors_of(&format!("{PRELUDE}control_plane:\n  poll_interval: 0s\n"));
    assert_eq!(
        error_at(&errs, "control_plane.poll_interval").message,
        "must be positive; got 0s"
    );
}

#[test]
fn dns_record_type_must_be_a_or_cname() {
    let text = "dns:\n  proxy_ip: 10.0.0.2\n  records:\n    - name: x\n      type: MX\n      value: y\ntls:\n  mode: sni-only\n";
    let errs = errors_of(text);
    assert_eq!(
        error_at(&errs, "dns.records[0].type").message,
        "must be A or CNAME; got \"MX\""
    );
    let text = "dns:\n  proxy_ip: 10.0.0.2\n  records:\n    - name: x\n      type: a\n      value: 1.2.3.4\n";
    error_at(&errors_of(text), "dns.records[0].type");
    let text = "dns:\n  proxy_ip: 10.0.0.2\n  records:\n    - name: ''\n      type: A\n      value: nope\ntls: {mode: sni-only}\n";
    let errs = errors_of(text);
    assert_eq!(
        error_at(&errs, "dns.records[0].name").message,
        "is required"
    );
    assert!(
        error_at(&errs, "dns.records[0].value")
            .message
            .contains("IPv4")
    );
}

#[test]
fn management_api_key_env_rules() {
    let text = format!("{PRELUDE}management:\n  listen: 127.0.0.1:9092\n");
    // Default variable, unset.
    let errs = load_str(&text, &env_with(&[])).unwrap_err().0;
    assert_eq!(
        error_at(&errs, "management.api_key_env").message,
        "\"IRON_MANAGEMENT_API_KEY\" is not set in the environment"
    );
    // Default variable, set; an explicit empty name also means the default.
    assert!(load_str(&text, &env_with(&[("IRON_MANAGEMENT_API_KEY", "t")])).is_ok());
    let empty = format!("{text}  api_key_env: \"\"\n");
    assert!(load_str(&empty, &env_with(&[("IRON_MANAGEMENT_API_KEY", "t")])).is_ok());
    // Custom variable: that one must be set, and an empty value counts as unset.
    let custom = format!("{text}  api_key_env: MY_KEY\n");
    let errs = load_str(&custom, &env_with(&[("MY_KEY", "")]))
        .unwrap_err()
        .0;
    assert!(
        error_at(&errs, "management.api_key_env")
            .message
            .contains("MY_KEY")
    );
    assert!(load_str(&custom, &env_with(&[("MY_KEY", "t")])).is_ok());
    // Without listen, nothing is required (and a stray api_key_env is only a warning).
    let no_listen = format!("{PRELUDE}management:\n  api_key_env: MY_KEY\n");
    let cfg = load_str(&no_listen, &env_with(&[])).unwrap();
    assert!(
        validate_warnings(&cfg)
            .iter()
            .any(|w| w.starts_with("management.api_key_env"))
    );
}

#[test]
fn secret_identities_must_name_someone_and_are_strict() {
    let entry = |ids: &str| {
        format!(
            "{PRELUDE}transforms:\n  - name: secrets\n    config:\n      secrets:\n\
            \x20       - source: {{type: env, var: A}}\n          inject: {{header: H}}\n          identities: {ids}\n"
        )
    };
    let errs = errors_of(&entry("{}"));
    assert_eq!(
        error_at(&errs, "transforms[0].config.secrets[0].identities").message,
        "must name at least one of uids, users, cgroups, policies"
    );
    assert!(
        !errors_of(&entry("{groups: [x]}")).is_empty(),
        "unknown key"
    );
    let cfg = load_str(&entry("{users: [ci], policies: [deploy]}"), &env_with(&[])).unwrap();
    let TransformSpec::Secrets(s) = &cfg.transforms[0].spec else {
        panic!("secrets")
    };
    let ids = s.secrets[0].identities.as_ref().unwrap();
    assert_eq!(
        (ids.users.as_slice(), ids.policies.as_slice()),
        (&["ci".to_string()][..], &["deploy".to_string()][..])
    );
}

#[test]
fn secrets_validation_messages() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: secrets\n    config:\n      secrets:\n\
        \x20       - source: {{type: env, var: A}}\n          inject: {{formatter: \"x\"}}\n\
        \x20       - source: {{type: env, var: A}}\n          inject: {{header: H, query_param: q}}\n\
        \x20       - source: {{type: env, var: A}}\n\
        \x20       - source: {{type: env, var: A}}\n          inject: {{header: H}}\n          replace: {{proxy_value: p}}\n\
        \x20       - source: {{type: env, var: A}}\n          proxy_value: p\n          replace: {{proxy_value: p}}\n\
        \x20       - source: {{type: env}}\n          match_body: true\n\
        \x20       - inject: {{header: H, formatter: \"Bearer {{{{ .Value \"}}\n\
        \x20       - source: {{type: env, var: A}}\n          replace: {{match_headers: [\"/([/\"]}}\n"
    );
    let errs = errors_of(&text);
    let p = "transforms[0].config.secrets";
    let msg = |path: &str| error_at(&errs, path).message.clone();
    assert_eq!(
        msg(&format!("{p}[0].inject")),
        "must specify either header or query_param"
    );
    assert_eq!(
        msg(&format!("{p}[1].inject")),
        "cannot specify both header and query_param"
    );
    assert_eq!(
        msg(&format!("{p}[2]")),
        "must specify either inject or replace"
    );
    assert_eq!(
        msg(&format!("{p}[3]")),
        "cannot specify both inject and replace"
    );
    assert_eq!(
        msg(&format!("{p}[4]")),
        "cannot use both top-level proxy_value/match_headers and replace block"
    );
    assert_eq!(
        msg(&format!("{p}[5].source.var")),
        "env source requires \"var\" field"
    );
    assert_eq!(msg(&format!("{p}[5].proxy_value")), "is required");
    assert_eq!(msg(&format!("{p}[6].source")), "is required");
    assert!(msg(&format!("{p}[6].inject.formatter")).starts_with("parsing formatter template"));
    assert_eq!(msg(&format!("{p}[7].replace.proxy_value")), "is required");
    assert!(
        msg(&format!("{p}[7].replace.match_headers[0]")).starts_with("invalid match_headers regex")
    );
}

#[test]
fn per_kind_validation_messages() {
    let text = format!(
        "{PRELUDE}transforms:\n\
        \x20 - name: header_allowlist\n    config: {{headers: []}}\n\
        \x20 - name: oauth_token\n    config: {{tokens: []}}\n\
        \x20 - name: oauth_token\n    config:\n      tokens:\n        - grant: jwt_bearer\n          token_endpoint: ftp://x\n          issuer: {{type: env, var: I}}\n\
        \x20 - name: gcp_auth\n    config: {{keyfile_path: /k, credentials_provider: {{type: workload_identity}}, subject: s}}\n\
        \x20 - name: gcp_id_token\n    config: {{keyfile_path: /k, header: proxy-authorization}}\n\
        \x20 - name: aws_auth\n    config: {{credentials_provider: {{type: workload_identity}}, access_key_id: {{type: env, var: A}}}}\n\
        \x20 - name: hmac_sign\n    config:\n      signature: {{message: \"{{{{.Nope}}}}\"}}\n      credentials: {{key: {{type: env, var: K}}}}\n      headers: [{{name: X, value: \"{{{{.Credentials.other}}}}\"}}]\n\
        \x20 - name: judge\n    config: {{name: j, prompt: p, rules: [{{host: a}}], provider: {{model: m, api_key_env: K}}}}\n\
        \x20 - name: judge\n    config: {{name: j, prompt: p, rules: [{{host: a}}], provider: {{type: openai, model: m, api_key_env: K}}}}\n\
        \x20 - name: grpc\n    config: {{tls: {{cert: /c}}}}\n\
        \x20 - name: annotate\n    config: {{annotations: [{{headers: []}}]}}\n\
        \x20 - name: allowlist\n    config: {{rules: [{{host: a, cidr: 10.0.0.0/8}}, {{methods: [GET]}}, {{host: a, paths: [v1]}}]}}\n"
    );
    let errs = load_str(&text, &env_with(&[("K", "k")])).unwrap_err().0;
    let msg = |path: &str| error_at(&errs, path).message.clone();
    assert_eq!(
        msg("transforms[0].config.headers"),
        "at least one header is required"
    );
    assert_eq!(
        msg("transforms[1].config.tokens"),
        "at least one entry in \"tokens\" is required"
    );
    let t = "transforms[2].config.tokens[0]";
    assert_eq!(
        msg(&format!("{t}.subject")),
        "is required for grant jwt_bearer"
    );
    assert_eq!(
        msg(&format!("{t}.private_key")),
        "is required for grant jwt_bearer"
    );
    assert_eq!(
        msg(&format!("{t}.audience")),
        "is required for grant jwt_bearer"
    );
    assert!(msg(&format!("{t}.token_endpoint")).starts_with("must be an http(s) URL"));
    assert_eq!(msg(&format!("{t}.rules")), "at least one rule is required");
    assert!(msg("transforms[3].config").starts_with("requires exactly one of"));
    assert!(
        msg("transforms[3].config.subject").starts_with("cannot be used with credentials_provider")
    );
    assert_eq!(
        msg("transforms[3].config.scopes"),
        "at least one scope is required"
    );
    assert_eq!(msg("transforms[4].config.audience"), "is required");
    assert!(msg("transforms[4].config.header").starts_with("must be \"authorization\""));
    assert!(msg("transforms[5].config").ends_with("not both"));
    assert!(msg("transforms[6].config.signature.message").contains("unknown template field .Nope"));
    assert!(msg("transforms[6].config.credentials").contains("\"secret\""));
    assert!(msg("transforms[6].config.headers[0].value").contains(".Credentials.other"));
    assert!(msg("transforms[7].config.provider.type").starts_with("is required"));
    assert!(msg("transforms[8].config.name").starts_with("duplicate judge name \"j\""));
    assert_eq!(msg("transforms[9].config.name"), "is required");
    assert_eq!(msg("transforms[9].config.target"), "is required");
    assert!(msg("transforms[9].config.tls").starts_with("cert and key"));
    assert_eq!(
        msg("transforms[10].config.annotations[0].rules"),
        "at least one rule is required"
    );
    assert_eq!(
        msg("transforms[10].config.annotations[0].headers"),
        "at least one header is required"
    );
    assert_eq!(
        msg("transforms[11].config.rules[0]"),
        "host and cidr are mutually exclusive"
    );
    assert_eq!(
        msg("transforms[11].config.rules[1]"),
        "one of host or cidr is required"
    );
    assert_eq!(
        msg("transforms[11].config.rules[2].paths[0]"),
        "path \"v1\" must start with /"
    );
}

#[test]
fn judge_api_key_must_be_set() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: judge\n    config: {{name: j, prompt: p, rules: [{{host: a}}], \
         provider: {{type: anthropic, model: m, api_key_env: MISSING}}}}\n"
    );
    let errs = load_str(&text, &env_with(&[])).unwrap_err().0;
    assert!(
        error_at(&errs, "transforms[0].config.provider.api_key_env")
            .message
            .contains("MISSING")
    );
}

#[test]
fn mcp_validation_messages() {
    let text = format!(
        "{PRELUDE}mcp:\n  servers:\n    - name: a\n      rules: [{{host: x}}]\n      tools:\n\
        \x20       - name: t\n          when:\n            - path: owner\n              equals: x\n              in: [y]\n\
        \x20           - matches: \"([\"\n        - name: t\n    - name: a\n"
    );
    let errs = errors_of(&text);
    let msg = |path: &str| error_at(&errs, path).message.clone();
    assert_eq!(
        msg("mcp.servers[0].tools[0].when[0]"),
        "exactly one of equals, in, matches is required"
    );
    assert_eq!(msg("mcp.servers[0].tools[0].when[1].path"), "is required");
    assert!(msg("mcp.servers[0].tools[0].when[1].matches").starts_with("invalid matches regex"));
    assert!(msg("mcp.servers[0].tools[1].name").starts_with("duplicate tool name"));
    assert!(msg("mcp.servers[1].name").starts_with("duplicate server name"));
    assert_eq!(msg("mcp.servers[1].rules"), "at least one rule is required");
    let errs = errors_of(&format!("{PRELUDE}mcp:\n  eror: {{code: 1}}\n"));
    assert!(
        error_at(&errs, "mcp.eror")
            .message
            .contains("unknown field `eror`")
    );
}

#[test]
fn unknown_top_level_key() {
    let errs = errors_of(&format!("{PRELUDE}proxxy:\n  http_listen: \":80\"\n"));
    let e = error_at(&errs, "proxxy");
    assert!(
        e.message
            .starts_with("unknown field `proxxy`, expected one of"),
        "{e}"
    );
    assert_eq!(e.location.map(|l| (l.line, l.column)), Some((5, 1)));
}

#[test]
fn syntax_error_is_reported_once_with_location() {
    let errs = errors_of("dns:\n  proxy_ip: [\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].location.is_some());
}

/// Inserting an unknown key into any strict mapping of a valid document yields exactly one
/// error naming that key's path.
#[test]
fn unknown_field_mutations() {
    const KEY: &str = "zz_unknown";
    // Maps whose keys are user-chosen names, not fields.
    const FREE_FORM: [&str; 2] = ["credentials", "token_endpoint_headers"];
    for (doc_name, doc) in [("full_example", FULL_EXAMPLE), ("all_kinds", ALL_KINDS)] {
        let lines: Vec<&str> = doc.lines().collect();
        let mut tried = 0;
        // One insertion per mapping is enough (and keeps the test fast): key by owner line.
        let mut seen_parents = std::collections::HashSet::new();
        let mut block_indent: Option<usize> = None;
        for (n, line) in lines.iter().enumerate() {
            let indent = line.len() - line.trim_start().len();
            let body = line.trim_start();
            if let Some(b) = block_indent {
                if body.is_empty() || indent > b {
                    continue;
                }
                block_indent = None;
            }
            if body.ends_with('|') {
                block_indent = Some(indent);
            }
            if body.is_empty()
                || body.starts_with('#')
                || body.starts_with('-')
                || !body.contains(':')
            {
                continue;
            }
            // The key owning this line's mapping: the nearest less-indented line.
            let owner = lines[..n].iter().enumerate().rev().find(|(_, l)| {
                let t = l.trim_start();
                !t.is_empty() && l.len() - t.len() < indent
            });
            // Entries of one sequence item share the `- ` line as owner; items differ.
            let item_start = lines[..=n].iter().rposition(|l| {
                l.trim_start().starts_with("- ") && l.len() - l.trim_start().len() + 2 == indent
            });
            if !seen_parents.insert((owner.map(|(i, _)| i), item_start)) {
                continue;
            }
            let parent = owner.map(|(_, l)| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .split(':')
                    .next()
                    .unwrap_or("")
            });
            if parent.is_some_and(|p| FREE_FORM.contains(&p)) {
                continue;
            }
            let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            mutated.insert(n, format!("{}{KEY}: 1", " ".repeat(indent)));
            let text = mutated.join("\n");
            let errs = match load_str(&text, &full_env()) {
                Ok(_) => panic!("{doc_name}: key before line {} was accepted", n + 1),
                Err(e) => e.0,
            };
            assert_eq!(errs.len(), 1, "{doc_name} line {}: {errs:#?}", n + 1);
            let e = &errs[0];
            assert!(
                e.path == KEY || e.path.ends_with(&format!(".{KEY}")),
                "{doc_name} line {}: {e}",
                n + 1
            );
            assert!(
                e.message.starts_with(&format!("unknown field `{KEY}`")),
                "{e}"
            );
            tried += 1;
        }
        assert!(tried > 20, "{doc_name}: only {tried} mutations");
    }
}

#[test]
fn env_overrides() {
    let text = format!("{PRELUDE}log:\n  level: info\n");
    let env = env_with(&[
        ("IRON_LOG_LEVEL", "debug"),
        ("IRON_DNS_LISTEN", ":5353"),
        ("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:8080"),
        ("IRON_PROXY_TUNNEL_LISTEN", ":1080"),
        ("IRON_PROXY_MAX_REQUEST_BODY_BYTES", "-1"),
        ("IRON_PROXY_UPSTREAM_RESPONSE_HEADER_TIMEOUT", "2m"),
        ("IRON_TLS_CERT_CACHE_SIZE", "5"),
        ("IRON_METRICS_LISTEN", ""),
    ]);
    let cfg = load_str(&text, &env).unwrap();
    assert_eq!(cfg.log.level, LogLevel::Debug);
    assert_eq!(cfg.dns.listen.port, 5353);
    assert_eq!(cfg.proxy.http_listen.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.proxy.tunnel_listen.as_ref().map(|l| l.port), Some(1080));
    assert_eq!(cfg.proxy.request_body_limit(), None);
    assert_eq!(cfg.proxy.upstream_response_header_timeout.0.as_secs(), 120);
    assert_eq!(cfg.tls.cert_cache_size, 5);
    // An empty variable does not override.
    assert_eq!(cfg.metrics.listen.port, 9090);

    // IRON_TLS_MODE / IRON_DNS_ENABLED change what validation requires.
    let cfg = load_str(
        "",
        &env_with(&[("IRON_TLS_MODE", "sni-only"), ("IRON_DNS_ENABLED", "F")]),
    )
    .unwrap();
    assert!(!cfg.dns.enabled);
    assert_eq!(cfg.tls.mode, TlsMode::SniOnly);
    let cfg = load_str(
        "",
        &env_with(&[
            ("IRON_TLS_CA_CERT", "/c"),
            ("IRON_TLS_CA_KEY", "/k"),
            ("IRON_DNS_PROXY_IP", "10.1.1.1"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.dns.proxy_ip, Some("10.1.1.1".parse().unwrap()));

    // Every bad override is reported, each under its variable's name.
    let errs = load_str(
        PRELUDE,
        &env_with(&[
            ("IRON_DNS_ENABLED", "maybe"),
            ("IRON_LOG_LEVEL", "loud"),
            ("IRON_TLS_MODE", "tls"),
            ("IRON_PROXY_MAX_RESPONSE_BODY_BYTES", "1k"),
            ("IRON_CONTROL_PLANE_POLL_INTERVAL", "10"),
        ]),
    )
    .unwrap_err()
    .0;
    assert_eq!(
        error_at(&errs, "IRON_DNS_ENABLED").message,
        "invalid boolean \"maybe\""
    );
    assert!(
        error_at(&errs, "IRON_LOG_LEVEL")
            .message
            .starts_with("unknown log level")
    );
    assert!(error_at(&errs, "IRON_TLS_MODE").message.contains("\"tls\""));
    error_at(&errs, "IRON_PROXY_MAX_RESPONSE_BODY_BYTES");
    assert!(
        error_at(&errs, "IRON_CONTROL_PLANE_POLL_INTERVAL")
            .message
            .starts_with("invalid duration")
    );
}

#[test]
fn warnings() {
    let text = format!(
        "{PRELUDE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: \
         {{type: env, var: A}}\n          inject: {{header: H}}\n"
    );
    let cfg = load_str(&text, &full_env()).unwrap();
    let w = validate_warnings(&cfg);
    assert!(
        w.iter().any(|w| w.contains("no allowlist transform")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w == "transforms[0].config.secrets[0]: no rules, so this secret applies to every destination"),
        "{w:?}"
    );
}

#[test]
fn mcp_under_sni_only_warns_that_https_is_not_policed() {
    let blocks = "mcp:\n  servers:\n    - name: gh\n      rules: [{host: mcp.test}]\n      tools: \
                  [{name: search}]\nmcp_gateway:\n  routes:\n    - name: r\n      rules: \
                  [{host: mcp.test}]\n      upstream: https://up.test/mcp\n";
    let sni = |w: &Vec<String>| -> Vec<String> {
        w.iter()
            .filter(|w| w.contains("sni-only passes"))
            .cloned()
            .collect()
    };
    let cfg = load_str(&format!("{PRELUDE}{blocks}"), &full_env()).unwrap();
    assert_eq!(
        sni(&validate_warnings(&cfg)),
        [
            "mcp: tls.mode=sni-only passes HTTPS through undecrypted, so MCP policy applies to \
             plain-HTTP requests only",
            "mcp_gateway: tls.mode=sni-only passes HTTPS through undecrypted, so MCP gateway \
             routing applies to plain-HTTP requests only",
        ]
    );
    // MITM mode sees the requests; an empty mcp block enforces nothing: no warning either way.
    let mitm =
        format!("dns:\n  proxy_ip: 10.0.0.2\ntls:\n  ca_cert: /c.crt\n  ca_key: /c.key\n{blocks}");
    let cfg = load_str(&mitm, &full_env()).unwrap();
    assert!(sni(&validate_warnings(&cfg)).is_empty());
    let cfg = load_str(&format!("{PRELUDE}mcp:\n  servers: []\n"), &full_env()).unwrap();
    assert!(sni(&validate_warnings(&cfg)).is_empty());
}

#[test]
fn transform_entry_deserializes_from_json_in_either_order() {
    let name_first: TransformEntry =
        serde_json::from_str(r#"{"name":"allowlist","config":{"domains":["a"]}}"#).unwrap();
    let config_first: TransformEntry =
        serde_json::from_str(r#"{"config":{"domains":["a"]},"name":"allowlist"}"#).unwrap();
    for e in [name_first, config_first] {
        let TransformSpec::Allowlist(a) = e.spec else {
            panic!()
        };
        assert_eq!(a.domains, ["a"]);
    }
    let no_config: TransformEntry = serde_json::from_str(r#"{"name":"body_capture"}"#).unwrap();
    assert_eq!(no_config.spec.kind(), "body_capture");
    let err =
        serde_json::from_str::<TransformEntry>(r#"{"config":{"domainz":[]},"name":"allowlist"}"#)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("config.domainz: unknown field `domainz`"),
        "{err}"
    );
    let err = serde_json::from_str::<TransformEntry>(r#"{"name":"nope"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown transform \"nope\""), "{err}");
}

#[test]
fn null_blocks_mean_defaults() {
    let text = "dns:\n  proxy_ip: 10.0.0.2\ntls:\n  mode: sni-only\nlog:\nmcp:\ntransforms:\n  - name: allowlist\n    config:\n";
    let cfg = load_str(text, &full_env()).unwrap();
    assert_eq!(cfg.log.level, LogLevel::Info);
    assert!(cfg.mcp.is_none());
    assert!(matches!(
        cfg.transforms[0].spec,
        TransformSpec::Allowlist(_)
    ));
    assert!(parse("transforms:\n").unwrap().transforms.is_empty());
}

#[test]
fn judge_api_key_must_be_set_in_identity_profiles_too() {
    let text = format!(
        "{PRELUDE}intercept:\n  mode: ebpf\n  policies:\n    - uids: [4242]\n      transforms:\n\
        \x20       - name: judge\n          config: {{name: j, prompt: p, rules: [{{host: a}}], \
         provider: {{type: openai, model: m, api_key_env: POLICY_KEY}}}}\n"
    );
    let errs = load_str(&text, &env_with(&[])).unwrap_err().0;
    assert!(
        error_at(
            &errs,
            "intercept.policies[0].transforms[0].config.provider.api_key_env"
        )
        .message
        .contains("POLICY_KEY"),
        "{errs:?}"
    );
}

#[test]
fn connection_limits() {
    let cfg = load_str(PRELUDE, &full_env()).unwrap();
    assert_eq!(cfg.proxy.max_connections, super::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(
        cfg.proxy.max_connections_per_client,
        super::DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    );
    let errs = errors_of(&format!(
        "{PRELUDE}proxy:\n  max_connections: 10\n  max_connections_per_client: 20\n"
    ));
    assert_eq!(
        error_at(&errs, "proxy.max_connections_per_client").message,
        "must not exceed proxy.max_connections (10); got 20"
    );
    let errs = errors_of(&format!("{PRELUDE}proxy:\n  max_connections: 0\n"));
    assert_eq!(
        error_at(&errs, "proxy.max_connections").message,
        "must be positive; got 0"
    );
    let errs = errors_of(&format!("{PRELUDE}proxy:\n  max_connections: -1\n"));
    error_at(&errs, "proxy.max_connections");
}

#[test]
fn allowlist_mode_is_enforce_or_learn_and_names_the_field() {
    let text =
        format!("{PRELUDE}transforms:\n  - name: allowlist\n    config:\n      mode: lern\n");
    let errs = errors_of(&text);
    let e = error_at(&errs, "transforms[0].config.mode");
    assert!(e.message.contains("unknown variant `lern`"), "{e}");
    assert!(e.message.contains("learn"), "{e}");
    let text = format!(
        "{PRELUDE}transforms:\n  - name: allowlist\n    config: {{mode: learn}}\n  - name: allowlist\nintercept:\n  mode: ebpf\n  policies:\n    - users: [ci]\n      transforms: [{{name: allowlist}}]\n"
    );
    let mut cfg = parse(&text).unwrap();
    assert_eq!(validate::learning(&cfg), ["transforms[0].config.mode"]);
    assert!(
        validate_warnings(&cfg)
            .iter()
            .any(|w| w
                .starts_with("transforms[0].config.mode: learn: the allowlist is NOT enforced")),
        "{:?}",
        validate_warnings(&cfg)
    );
    validate::learn_everywhere(&mut cfg);
    assert_eq!(
        validate::learning(&cfg),
        [
            "transforms[0].config.mode",
            "transforms[1].config.mode",
            "intercept.policies[0].transforms[0].config.mode",
        ]
    );
}
