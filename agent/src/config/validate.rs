//! Cross-field validation. Every error is collected, none stops the others.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{Config, ConfigError, ConfigErrors, DnsRecordType, TlsMode, TransformSpec};

/// Static checks (no environment). Transforms are numbered by their position in `cfg`.
pub fn validate(cfg: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    collect(cfg, &identity_indices(cfg), &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Checks that read the environment: the management API key and judge API keys must be set.
pub fn validate_env(
    cfg: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    collect_env(cfg, &identity_indices(cfg), env, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

fn identity_indices(cfg: &Config) -> Vec<usize> {
    (0..cfg.transforms.len()).collect()
}

/// The `transforms[i]` path of the n-th decoded entry (entries that failed to decode are absent
/// from `cfg.transforms`, so positions and original indices can differ).
fn entry_path(indices: &[usize], n: usize) -> String {
    format!("transforms[{}]", indices.get(n).copied().unwrap_or(n))
}

pub(super) fn collect(cfg: &Config, indices: &[usize], errors: &mut Vec<ConfigError>) {
    cfg.intercept.validate(errors);
    // With eBPF interception the DNS server answers real addresses, so no proxy_ip is needed.
    if cfg.dns.enabled && cfg.dns.proxy_ip.is_none() && !cfg.intercept.enabled() {
        errors.push(ConfigError::new(
            "dns.proxy_ip",
            "is required when dns is enabled",
        ));
    }
    validate_dns_entries(cfg, errors);
    if cfg.tls.mode == TlsMode::Mitm {
        if cfg.tls.ca_cert.is_none() {
            errors.push(ConfigError::new(
                "tls.ca_cert",
                "is required when tls.mode is mitm",
            ));
        }
        if cfg.tls.ca_key.is_none() {
            errors.push(ConfigError::new(
                "tls.ca_key",
                "is required when tls.mode is mitm",
            ));
        }
    }
    if cfg.proxy.upstream_response_header_timeout.0.is_zero() {
        errors.push(ConfigError::new(
            "proxy.upstream_response_header_timeout",
            "must be positive; got 0s",
        ));
    }
    if cfg.proxy.max_connections == 0 {
        errors.push(ConfigError::new(
            "proxy.max_connections",
            "must be positive; got 0",
        ));
    }
    if cfg.proxy.max_connections_per_client == 0 {
        errors.push(ConfigError::new(
            "proxy.max_connections_per_client",
            "must be positive; got 0",
        ));
    } else if cfg.proxy.max_connections_per_client > cfg.proxy.max_connections {
        errors.push(ConfigError::new(
            "proxy.max_connections_per_client",
            format!(
                "must not exceed proxy.max_connections ({}); got {}",
                cfg.proxy.max_connections, cfg.proxy.max_connections_per_client
            ),
        ));
    }
    if cfg.control_plane.poll_interval.0.is_zero() {
        errors.push(ConfigError::new(
            "control_plane.poll_interval",
            "must be positive; got 0s",
        ));
    }
    if let Some(url) = &cfg.control_plane.url
        && let Err(e) = check_url_syntax(url)
    {
        errors.push(ConfigError::new("control_plane.url", e));
    }
    for (n, entry) in cfg.transforms.iter().enumerate() {
        entry.validate(&entry_path(indices, n), errors);
    }
    unique_judge_names(cfg, indices, errors);
    if let Some(mcp) = &cfg.mcp {
        mcp.validate("mcp", errors);
    }
    if let Some(gw) = &cfg.mcp_gateway {
        gw.validate("mcp_gateway", errors);
    }
}

/// `dns.records` and `dns.passthrough` entries.
fn validate_dns_entries(cfg: &Config, errors: &mut Vec<ConfigError>) {
    for (i, r) in cfg.dns.records.iter().enumerate() {
        let p = format!("dns.records[{i}]");
        if r.name.trim().is_empty() {
            errors.push(ConfigError::new(format!("{p}.name"), "is required"));
        }
        if r.value.trim().is_empty() {
            errors.push(ConfigError::new(format!("{p}.value"), "is required"));
        } else if r.kind == DnsRecordType::A && r.value.parse::<Ipv4Addr>().is_err() {
            // iron-proxy silently ignores such a record; refusing it surfaces the typo.
            errors.push(ConfigError::new(
                format!("{p}.value"),
                format!("must be an IPv4 address for an A record; got {:?}", r.value),
            ));
        }
    }
    for (i, p) in cfg.dns.passthrough.iter().enumerate() {
        if p.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("dns.passthrough[{i}]"),
                "must not be empty",
            ));
        }
    }
}

fn unique_judge_names(cfg: &Config, indices: &[usize], errors: &mut Vec<ConfigError>) {
    // Judge names label traces and `rejected_by`; the docs require them unique.
    let mut judges: HashMap<&str, usize> = HashMap::new();
    for (n, entry) in cfg.transforms.iter().enumerate() {
        if let TransformSpec::Judge(j) = &entry.spec {
            if j.name.is_empty() {
                continue;
            }
            if let Some(first) = judges.insert(&j.name, n) {
                errors.push(ConfigError::new(
                    format!("{}.config.name", entry_path(indices, n)),
                    format!(
                        "duplicate judge name {:?} (also used by {})",
                        j.name,
                        entry_path(indices, first)
                    ),
                ));
            }
        }
    }
    cfg.postgres.validate(cfg.tls.mode, errors);
}

pub(super) fn collect_env(
    cfg: &Config,
    indices: &[usize],
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    let is_set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    if let Some(var) = cfg.management.effective_api_key_env()
        && !is_set(var)
    {
        errors.push(ConfigError::new(
            "management.api_key_env",
            format!("{var:?} is not set in the environment"),
        ));
    }
    let judge_key_unset = |entry: &super::TransformEntry| match &entry.spec {
        TransformSpec::Judge(j) => j
            .provider
            .as_ref()
            .filter(|p| !p.api_key_env.is_empty() && !is_set(&p.api_key_env))
            .map(|p| format!("env var {:?} is empty or not set", p.api_key_env)),
        _ => None,
    };
    cfg.postgres.validate_env(env, errors);
    for (n, entry) in cfg.transforms.iter().enumerate() {
        if let Some(msg) = judge_key_unset(entry) {
            errors.push(ConfigError::new(
                format!("{}.config.provider.api_key_env", entry_path(indices, n)),
                msg,
            ));
        }
    }
    // Judges of identity profiles need their keys too (the pipeline would only fall back).
    for (i, p) in cfg.intercept.policies.iter().enumerate() {
        for (j, entry) in p.transforms.iter().enumerate() {
            if let Some(msg) = judge_key_unset(entry) {
                errors.push(ConfigError::new(
                    format!("intercept.policies[{i}].transforms[{j}].config.provider.api_key_env"),
                    msg,
                ));
            }
        }
    }
}

/// Non-fatal observations worth logging at startup: settings that make traffic flow more
/// widely than the operator may expect, and settings that are ignored.
pub fn validate_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if !cfg
        .transforms
        .iter()
        .any(|t| matches!(t.spec, TransformSpec::Allowlist(_)))
    {
        out.push(
            "transforms: no allowlist transform is configured, so every destination is allowed"
                .to_string(),
        );
    }
    for (i, t) in cfg.transforms.iter().enumerate() {
        t.spec
            .warnings(&format!("transforms[{i}].config"), &mut out);
    }
    for (i, p) in cfg.intercept.policies.iter().enumerate() {
        if !p
            .transforms
            .iter()
            .any(|t| matches!(t.spec, TransformSpec::Allowlist(_)))
        {
            out.push(format!(
                "intercept.policies[{i}]: no allowlist transform, so every destination is allowed for it"
            ));
        }
        for (j, t) in p.transforms.iter().enumerate() {
            t.spec.warnings(
                &format!("intercept.policies[{i}].transforms[{j}].config"),
                &mut out,
            );
        }
    }
    out.extend(super::precedence::exempt_cgroup_warnings(&cfg.intercept));
    if cfg.intercept.enabled() {
        out.extend(crate::ebpf::harden::resolver_warnings(
            cfg.intercept.unix_allow.as_deref(),
        ));
    }
    if cfg.tls.mode == TlsMode::SniOnly && (cfg.tls.ca_cert.is_some() || cfg.tls.ca_key.is_some()) {
        out.push("tls: ca_cert and ca_key are ignored when tls.mode=sni-only".to_string());
    }
    if cfg.tls.mode == TlsMode::SniOnly {
        out.extend(sni_only_mcp_warnings(cfg));
    }
    if cfg.management.listen.is_none() && cfg.management.api_key_env.is_some() {
        out.push(
            "management.api_key_env: ignored because management.listen is not set".to_string(),
        );
    }
    if !cfg.dns.enabled && (!cfg.dns.records.is_empty() || !cfg.dns.passthrough.is_empty()) {
        out.push("dns: records and passthrough are ignored because dns is disabled".to_string());
    }
    out
}

/// MCP policy needs to read requests; sni-only mode splices HTTPS without decrypting it, so only
/// plain-HTTP MCP traffic would ever be policed or routed.
fn sni_only_mcp_warnings(cfg: &Config) -> Vec<String> {
    let mcp = cfg.mcp.as_ref().is_some_and(|m| !m.servers.is_empty());
    let gateway = cfg
        .mcp_gateway
        .as_ref()
        .is_some_and(|g| !g.routes.is_empty());
    [
        ("mcp", "MCP policy", mcp),
        ("mcp_gateway", "MCP gateway routing", gateway),
    ]
    .into_iter()
    .filter(|(_, _, on)| *on)
    .map(|(key, what, _)| {
        format!(
            "{key}: tls.mode=sni-only passes HTTPS through undecrypted, so {what} applies \
                 to plain-HTTP requests only"
        )
    })
    .collect()
}

/// `http://` or `https://`, a host, no query or fragment.
pub fn check_url_syntax(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with https:// or http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} names no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    Ok(())
}

/// Every allowlist of `cfg` (top level and `intercept.policies`), with its field path.
fn allowlists_mut(cfg: &mut Config) -> Vec<(String, &mut super::transforms::AllowlistConfig)> {
    let top = cfg
        .transforms
        .iter_mut()
        .enumerate()
        .map(|(i, t)| (format!("transforms[{i}]"), t));
    let policies = cfg
        .intercept
        .policies
        .iter_mut()
        .enumerate()
        .flat_map(|(p, pol)| {
            pol.transforms
                .iter_mut()
                .enumerate()
                .map(move |(i, t)| (format!("intercept.policies[{p}].transforms[{i}]"), t))
        });
    top.chain(policies)
        .filter_map(|(path, t)| match &mut t.spec {
            TransformSpec::Allowlist(a) => Some((format!("{path}.config"), a)),
            _ => None,
        })
        .collect()
}

/// `iron-agent run --learn`: puts every allowlist of `cfg` in learn mode.
pub fn learn_everywhere(cfg: &mut Config) {
    for (_, a) in allowlists_mut(cfg) {
        a.mode = super::transforms::AllowlistMode::Learn;
    }
}

/// The field paths of the allowlists in learn mode (for the startup warning).
pub fn learning(cfg: &Config) -> Vec<String> {
    let mut cfg = cfg.clone();
    allowlists_mut(&mut cfg)
        .into_iter()
        .filter(|(_, a)| a.learns())
        .map(|(p, _)| format!("{p}.mode"))
        .collect()
}
