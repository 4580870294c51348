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

/// `stringify!` of a field path may put spaces around the dots.
fn path(raw: &str) -> String {
    raw.replace(' ', "")
}

/// One list of field paths, two uses: `$names` (for the tests that hold the docs and the
/// config types to it) and `$compare`, which pushes the path of every listed field that
/// differs between two configs.
macro_rules! field_set {
    ($names:ident, $compare:ident; $($($f:ident).+),* $(,)?) => {
        #[cfg(test)]
        const $names: &[&str] = &[$(stringify!($($f).+)),*];

        fn $compare(old: &Config, new: &Config, out: &mut Vec<String>) {
            $(
                if differs(&old.$($f).+, &new.$($f).+) {
                    out.push(path(stringify!($($f).+)));
                }
            )*
        }
    };
}

// Settings bound to sockets, files or the kernel when the agent started: listen addresses,
// the CA, the DNS server, the upstream connector, limits (the connection limits size one
// counter built at start), the control-plane client, eBPF attachment and hardening.
field_set!(FIXED, compare_fixed;
    dns.enabled, dns.listen, dns.proxy_ip, dns.upstream_resolver, dns.passthrough,
    dns.records,
    proxy.http_listen, proxy.https_listen, proxy.tunnel_listen,
    proxy.max_request_body_bytes, proxy.max_response_body_bytes,
    proxy.upstream_response_header_timeout, proxy.upstream_deny_cidrs,
    proxy.upstream_proxy, proxy.max_connections, proxy.max_connections_per_client,
    tls.mode, tls.ca_cert, tls.ca_key, tls.cert_cache_size, tls.leaf_cert_expiry_hours,
    metrics.listen, management.listen, management.api_key_env,
    control_plane.poll_interval, control_plane.url, control_plane.allow_insecure,
    control_plane.token_file,
    log.level,
    intercept.mode, intercept.default, intercept.listeners, intercept.loopback,
    intercept.pin_dir, intercept.require_lsm, intercept.inbound_ports,
    intercept.unix_allow, intercept.self_protect,
);

// What a reload rebuilds; `intercept.policies` is also reported entry by entry.
field_set!(RELOADABLE, compare_reloadable;
    transforms, mcp, mcp_gateway, postgres,
    intercept.governed, intercept.exempt, intercept.deny,
);

/// Settings fixed at start that differ: a reload changing one is refused with every such
/// field named, rather than silently ignored.
pub fn fixed_changes(old: &Config, new: &Config, postgres_running: bool) -> Vec<String> {
    let mut out = Vec::new();
    compare_fixed(old, new, &mut out);
    // A running PostgreSQL proxy is reconfigured in place; starting one needs a restart.
    if !postgres_running && differs(&old.postgres, &new.postgres) {
        out.push("postgres".into());
    }
    out
}

/// The reloadable sections that differ, for the reload log line.
pub fn reloadable_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    compare_reloadable(old, new, &mut out);
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

    /// Read once at start (the connection counter, the control-plane client, the hardening
    /// maps): a reload changing them must be refused, not answered "changed: nothing".
    #[test]
    fn limits_control_plane_and_hardening_changes_are_named() {
        let a = cfg("");
        let b = cfg(concat!(
            "proxy: {max_connections: 10, max_connections_per_client: 2}\n",
            "control_plane: {url: 'https://cp.test', allow_insecure: true, token_file: /t}\n",
            "intercept: {require_lsm: true, inbound_ports: [8080], unix_allow: ['/x'], ",
            "self_protect: false}\n",
        ));
        assert_eq!(
            fixed_changes(&a, &b, false),
            [
                "proxy.max_connections",
                "proxy.max_connections_per_client",
                "control_plane.url",
                "control_plane.allow_insecure",
                "control_plane.token_file",
                "intercept.require_lsm",
                "intercept.inbound_ports",
                "intercept.unix_allow",
                "intercept.self_protect",
            ]
        );
        assert!(reloadable_changes(&a, &b).is_empty());
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

    /// Walks the pretty `Debug` rendering of the default config: every top-level field is a
    /// reloadable section, or a struct each of whose fields is listed as fixed or reloadable.
    /// A setting added to the config types without a decision fails here, instead of being
    /// silently ignored by reloads.
    #[test]
    fn every_setting_is_either_fixed_or_reloadable() {
        let known: Vec<String> = FIXED
            .iter()
            .chain(RELOADABLE)
            .map(|f| path(f))
            // Compared entry by entry; `audit_copy` is set by `run --summary`, not the file.
            .chain(["intercept.policies".into(), "log.audit_copy".into()])
            .collect();
        let rendered = format!("{:#?}", Config::default());
        let (mut section, mut whole) = ("", true);
        let mut unclassified = Vec::new();
        for line in rendered.lines() {
            let body = line.trim_start();
            let Some((name, _)) = body.split_once(':') else {
                continue;
            };
            match line.len() - body.len() {
                4 => {
                    section = name;
                    whole = known.iter().any(|k| k == name);
                    if !whole && !body.ends_with('{') {
                        unclassified.push(name.to_string());
                    }
                }
                8 if !whole => {
                    let field = format!("{section}.{name}");
                    if !known.contains(&field) {
                        unclassified.push(field);
                    }
                }
                _ => {}
            }
        }
        assert!(
            rendered.contains("max_connections_per_client"),
            "{rendered}"
        );
        assert!(unclassified.is_empty(), "{unclassified:?}");
    }

    /// The strings between backticks in `s`.
    fn backticked(s: &str) -> Vec<&str> {
        s.split('`').skip(1).step_by(2).collect()
    }

    /// docs/operations.md's "Fixed at start" table names exactly what `fixed_changes`
    /// compares: one row per section, its fields in backticks (none: the whole section).
    #[test]
    fn the_operations_docs_list_exactly_the_fixed_settings() {
        let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let text = std::fs::read_to_string(doc).unwrap();
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Fixed at start"))
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .collect();
        let mut documented = Vec::new();
        for row in &rows {
            let cells: Vec<&str> = row.split('|').collect();
            let (section, fields) = (backticked(cells[1]), backticked(cells[2]));
            assert_eq!(section.len(), 1, "one section per row: {row}");
            if fields.is_empty() {
                documented.push(section[0].to_string());
            }
            for f in fields {
                documented.push(format!("{}.{f}", section[0]));
            }
        }
        let mut code: Vec<String> = FIXED
            .iter()
            .map(|f| path(f))
            .chain(["postgres".into()])
            .collect();
        documented.sort();
        code.sort();
        assert_eq!(documented, code, "rows: {rows:#?}");
    }

    #[test]
    fn hash_is_sha256_of_the_file() {
        assert_eq!(
            config_hash(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
