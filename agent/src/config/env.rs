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
    if let Some(v) = get("IRON_TLS_CA_CERT") {
        cfg.tls.ca_cert = Some(v.into());
    }
    if let Some(v) = get("IRON_TLS_CA_KEY") {
        cfg.tls.ca_key = Some(v.into());
    }
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

fn set_dns_enabled(cfg: &mut Config, v: &str, errors: &mut Vec<ConfigError>) {
    match parse_go_bool(v) {
        Some(b) => cfg.dns.enabled = b,
        None => errors.push(ConfigError::new(
            "IRON_DNS_ENABLED",
            format!("invalid boolean {v:?}"),
        )),
    }
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
