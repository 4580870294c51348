//! `IRON_*` environment overrides, applied after the file (a non-empty variable wins).

use super::{Config, ConfigError, ConfigErrors};

/// Applies every `IRON_*` override iron-proxy knows. `env` is injected so tests never touch the
/// process environment.
pub fn apply_overrides(
    cfg: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let get = |k: &str| env(k).filter(|v| !v.is_empty());

    macro_rules! parse_into {
        ($var:literal, $target:expr) => {
            if let Some(v) = get($var) {
                match v.parse() {
                    Ok(p) => $target = p,
                    Err(e) => errors.push(ConfigError::new($var, format!("{e}"))),
                }
            }
        };
    }
    macro_rules! parse_some {
        ($var:literal, $target:expr) => {
            if let Some(v) = get($var) {
                match v.parse() {
                    Ok(p) => $target = Some(p),
                    Err(e) => errors.push(ConfigError::new($var, format!("{e}"))),
                }
            }
        };
    }

    if let Some(v) = get("IRON_DNS_ENABLED") {
        set_dns_enabled(cfg, &v, &mut errors);
    }
    parse_into!("IRON_DNS_LISTEN", cfg.dns.listen);
    parse_some!("IRON_DNS_PROXY_IP", cfg.dns.proxy_ip);
    parse_some!("IRON_DNS_UPSTREAM_RESOLVER", cfg.dns.upstream_resolver);
    parse_into!("IRON_PROXY_HTTP_LISTEN", cfg.proxy.http_listen);
    parse_into!("IRON_PROXY_HTTPS_LISTEN", cfg.proxy.https_listen);
    parse_some!("IRON_PROXY_TUNNEL_LISTEN", cfg.proxy.tunnel_listen);
    if let Some(v) = get("IRON_TLS_MODE") {
        set_tls_mode(cfg, &v, &mut errors);
    }
    set_strings(cfg, &get, &mut errors);
    parse_into!("IRON_METRICS_LISTEN", cfg.metrics.listen);
    parse_some!("IRON_MANAGEMENT_LISTEN", cfg.management.listen);
    parse_into!("IRON_LOG_LEVEL", cfg.log.level);
    parse_into!(
        "IRON_PROXY_MAX_REQUEST_BODY_BYTES",
        cfg.proxy.max_request_body_bytes
    );
    parse_into!(
        "IRON_PROXY_MAX_RESPONSE_BODY_BYTES",
        cfg.proxy.max_response_body_bytes
    );
    parse_into!("IRON_TLS_CERT_CACHE_SIZE", cfg.tls.cert_cache_size);
    parse_into!(
        "IRON_TLS_LEAF_CERT_EXPIRY_HOURS",
        cfg.tls.leaf_cert_expiry_hours
    );
    parse_into!(
        "IRON_PROXY_UPSTREAM_RESPONSE_HEADER_TIMEOUT",
        cfg.proxy.upstream_response_header_timeout
    );
    if let Some(v) = get("IRON_PROXY_UPSTREAM_DENY_CIDRS") {
        set_deny_cidrs(cfg, &v, &mut errors);
    }
    parse_into!(
        "IRON_CONTROL_PLANE_POLL_INTERVAL",
        cfg.control_plane.poll_interval
    );

    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Paths and URLs, taken as they are (the URL syntax checked).
fn set_strings(
    cfg: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(v) = get("IRON_TLS_CA_CERT") {
        cfg.tls.ca_cert = Some(v.into());
    }
    if let Some(v) = get("IRON_TLS_CA_KEY") {
        cfg.tls.ca_key = Some(v.into());
    }
    if let Some(v) = get("IRON_CONTROL_PLANE_URL") {
        match super::validate::check_url_syntax(&v) {
            Ok(()) => cfg.control_plane.url = Some(v),
            Err(e) => errors.push(ConfigError::new("IRON_CONTROL_PLANE_URL", e)),
        }
    }
}

fn set_dns_enabled(cfg: &mut Config, v: &str, errors: &mut Vec<ConfigError>) {
    match parse_go_bool(v) {
        Some(b) => cfg.dns.enabled = b,
        None => errors.push(ConfigError::new(
            "IRON_DNS_ENABLED",
            format!("invalid boolean {v:?}"),
        )),
    }
}

/// Comma-separated CIDRs replacing the whole YAML list (iron-proxy's later addition).
fn set_deny_cidrs(cfg: &mut Config, v: &str, errors: &mut Vec<ConfigError>) {
    let mut list = Vec::new();
    for item in v.split(',') {
        match item.parse::<super::Cidr>() {
            Ok(c) => list.push(c),
            Err(e) => errors.push(ConfigError::new("IRON_PROXY_UPSTREAM_DENY_CIDRS", e)),
        }
    }
    cfg.proxy.upstream_deny_cidrs = Some(list);
}

fn set_tls_mode(cfg: &mut Config, v: &str, errors: &mut Vec<ConfigError>) {
    match v {
        "mitm" => cfg.tls.mode = super::TlsMode::Mitm,
        "sni-only" => cfg.tls.mode = super::TlsMode::SniOnly,
        _ => errors.push(ConfigError::new(
            "IRON_TLS_MODE",
            format!("tls.mode must be \"mitm\" or \"sni-only\"; got {v:?}"),
        )),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const YAML: &str = "dns: {enabled: false}\ntls: {mode: sni-only}\nproxy:\n  upstream_deny_cidrs: ['10.0.0.0/8']\n";

    #[test]
    fn deny_cidrs_env_replaces_the_yaml_list() {
        let cfg = load_str(
            YAML,
            &env(&[("IRON_PROXY_UPSTREAM_DENY_CIDRS", "192.168.0.0/16, fd00::/8")]),
        )
        .unwrap();
        let nets: Vec<String> = cfg
            .proxy
            .effective_deny_cidrs()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.168.0.0/16", "fd00::/8"]);
        // Empty: the YAML list stays.
        let cfg = load_str(YAML, &env(&[("IRON_PROXY_UPSTREAM_DENY_CIDRS", "")])).unwrap();
        assert_eq!(cfg.proxy.effective_deny_cidrs().len(), 1);
    }

    #[test]
    fn bad_deny_cidr_env_names_the_variable() {
        let errs = load_str(
            YAML,
            &env(&[("IRON_PROXY_UPSTREAM_DENY_CIDRS", "10.0.0.0/8,1.2.3.4")]),
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "IRON_PROXY_UPSTREAM_DENY_CIDRS");
        assert!(
            errs[0].message.contains("must be CIDR notation"),
            "{}",
            errs[0].message
        );
    }
}
