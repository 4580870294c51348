//! What a reload compares: the settings fixed at start (a change is refused, naming each
//! field), the sections a reload applies (logged as "what changed"), and the config hash.

use std::fmt::Debug;

use sha2::{Digest, Sha256};

use crate::config::Config;

/// `sha256:<hex>` of the config file's bytes (what `sha256sum` prints for the file), the
/// identity of a config generation in the reload log lines.
pub fn config_hash(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Config types derive `Debug` but not `PartialEq`; their derived `Debug` output renders every
/// field, so equal renderings mean equal values. Only compared, never logged (a config may
/// name, though never hold, credentials).
fn differs<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Pushes the path of every listed field that differs between `$old` and `$new`.
macro_rules! compare {
    ($old:expr, $new:expr, $out:expr; $($($f:ident).+),* $(,)?) => {
        $(
            if differs(&$old.$($f).+, &$new.$($f).+) {
                $out.push(stringify!($($f).+).replace(' ', ""));
            }
        )*
    };
}

/// Settings bound to sockets, files or the kernel when the agent started: listen addresses,
/// the CA, the DNS server, the upstream connector, limits, eBPF attachment. A reload that
/// changes one is refused with every such field named, rather than silently ignored.
pub fn fixed_changes(old: &Config, new: &Config, postgres_running: bool) -> Vec<String> {
    let mut out = Vec::new();
    compare!(old, new, out;
        dns.enabled, dns.listen, dns.proxy_ip, dns.upstream_resolver, dns.passthrough,
        dns.records,
        proxy.http_listen, proxy.https_listen, proxy.tunnel_listen,
        proxy.max_request_body_bytes, proxy.max_response_body_bytes,
        proxy.upstream_response_header_timeout, proxy.upstream_deny_cidrs,
        proxy.upstream_proxy,
        tls.mode, tls.ca_cert, tls.ca_key, tls.cert_cache_size, tls.leaf_cert_expiry_hours,
        metrics.listen, management.listen, management.api_key_env,
        control_plane.poll_interval, log.level,
        intercept.mode, intercept.default, intercept.listeners, intercept.loopback,
        intercept.pin_dir, intercept.require_lsm, intercept.inbound_ports,
        intercept.unix_allow, intercept.self_protect,
    );
    // A running PostgreSQL proxy is reconfigured in place; starting one needs a restart.
    if !postgres_running && differs(&old.postgres, &new.postgres) {
        out.push("postgres".into());
    }
    out
}

/// The reloadable sections that differ, for the reload log line.
pub fn reloadable_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    compare!(old, new, out;
        transforms, mcp, mcp_gateway, postgres,
        intercept.governed, intercept.exempt, intercept.deny,
    );
    let (a, b) = (&old.intercept.policies, &new.intercept.policies);
    for i in 0..a.len().max(b.len()) {
        if differs(&a.get(i), &b.get(i)) {
            out.push(format!("intercept.policies[{i}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        crate::config::parse(yaml).unwrap()
    }

    #[test]
    fn listen_and_ca_changes_are_named() {
        let a = cfg("proxy: {http_listen: '127.0.0.1:1'}\ntls: {ca_cert: /a}\n");
        let b = cfg("proxy: {http_listen: '127.0.0.1:2'}\ntls: {ca_cert: /b}\n");
        assert_eq!(
            fixed_changes(&a, &b, false),
            ["proxy.http_listen", "tls.ca_cert"]
        );
        assert!(fixed_changes(&a, &a, false).is_empty());
    }

    #[test]
    fn policy_changes_are_reloadable() {
        let a = cfg("transforms: [{name: allowlist, config: {domains: [a.test]}}]\n");
        let b = cfg("transforms: [{name: allowlist, config: {domains: [b.test]}}]\n");
        assert!(fixed_changes(&a, &b, false).is_empty());
        assert_eq!(reloadable_changes(&a, &b), ["transforms"]);
        assert!(reloadable_changes(&a, &a).is_empty());
    }

    #[test]
    fn starting_postgres_needs_a_restart() {
        let a = cfg("");
        let b = cfg("postgres: {listen: '127.0.0.1:0'}\n");
        assert_eq!(fixed_changes(&a, &b, false), ["postgres"]);
        assert!(fixed_changes(&a, &b, true).is_empty());
    }

    #[test]
    fn hash_is_sha256_of_the_file() {
        assert_eq!(
            config_hash(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
