//! Cross-field validation. Every error is collected, none stops the others.

use super::{Config, ConfigError, ConfigErrors, TlsMode};

pub fn validate(cfg: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    if cfg.dns.enabled && cfg.dns.proxy_ip.is_none() {
        errors.push(ConfigError::new("dns.proxy_ip", "is required when dns is enabled"));
    }
    if cfg.tls.mode == TlsMode::Mitm {
        if cfg.tls.ca_cert.is_none() {
            errors.push(ConfigError::new("tls.ca_cert", "is required when tls.mode is mitm"));
        }
        if cfg.tls.ca_key.is_none() {
            errors.push(ConfigError::new("tls.ca_key", "is required when tls.mode is mitm"));
        }
    }
    if cfg.proxy.upstream_response_header_timeout.0.is_zero() {
        errors.push(ConfigError::new(
            "proxy.upstream_response_header_timeout",
            "must be positive",
        ));
    }
    if cfg.control_plane.poll_interval.0.is_zero() {
        errors.push(ConfigError::new("control_plane.poll_interval", "must be positive"));
    }
    for (i, spec) in cfg.transforms.iter().enumerate() {
        spec.validate(&format!("transforms[{i}]"), &mut errors);
    }
    if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
}
