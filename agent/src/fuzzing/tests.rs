//! Every seed of `fuzz/corpus/` and every input a fuzzer ever crashed on, through the same
//! entry points as the fuzz targets: a regression here is a panic (the test fails).

use std::path::PathBuf;

use super::*;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("config_yaml", config_yaml),
    ("client_hello", client_hello),
    ("dns_request", dns_request),
    ("socks5", socks5),
    ("connect_head", connect_head),
    ("http1_head", http1_head),
    ("template", template),
    ("sigv4_scope", sigv4_scope),
    ("mcp_jsonrpc", mcp_jsonrpc),
    ("postgres_wire", postgres_wire),
];

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        out.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    out
}

#[test]
fn every_seed_runs_through_its_target() {
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for seed in seeds {
            target(&seed);
            // Also cut differently: the segmentation seed is the first byte.
            let mut recut = seed.clone();
            if let Some(b) = recut.first_mut() {
                *b = b.wrapping_add(1);
            }
            target(&recut);
        }
    }
}

#[test]
fn empty_and_tiny_inputs() {
    for (_, target) in TARGETS {
        target(&[]);
        target(&[0]);
        target(&[1, 0]);
        target(&[0xff; 3]);
    }
}

/// The targets that build their fixtures once return early if that fails: it must not.
#[test]
fn fixtures_build() {
    let dns = crate::config::parse(parse::DNS_CONFIG).unwrap();
    let resolver = crate::resolve::Resolver::new(None).unwrap();
    assert!(crate::dns::handler_for_fuzzing(&dns.dns, std::sync::Arc::new(resolver)).is_some());
    let cfg = crate::config::parse(parse::MCP_CONFIG).unwrap();
    let mut secrets = crate::secrets::SecretRegistry::default();
    let mcp = crate::mcp::Mcp::build(cfg.mcp.as_ref(), None, &mut secrets).unwrap();
    assert_eq!(mcp.unwrap().servers().len(), 1);
}
