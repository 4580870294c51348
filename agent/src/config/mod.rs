//! Configuration: the iron-proxy YAML schema, typed and strict.
//!
//! Loading is split in three steps so each can be tested alone: [`parse`] (YAML → typed tree,
//! unknown keys are errors), [`env::apply_overrides`] (`IRON_*` variables) and
//! [`validate::validate`] (cross-field checks). [`load`] runs all three and returns every error it
//! found, each naming its field path.

pub mod env;
pub mod error;
pub mod intercept;
pub mod mcp;
pub mod mcp_gateway;
pub mod postgres;
pub mod precedence;
pub mod secret_env;
pub mod transforms;
pub mod types;
pub mod validate;
mod yaml;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors, SourceLocation};
pub use mcp::McpConfig;
pub use mcp_gateway::McpGatewayConfig;
pub use transforms::{AllowlistConfig, RuleConfig, SecretSource, TransformEntry, TransformSpec};
pub use types::{Cidr, GoDuration, ListenAddr, LogLevel};
pub use validate::validate_warnings;

/// The whole configuration file. Every block is optional; defaults follow iron-proxy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub dns: DnsConfig,
    pub proxy: ProxyConfig,
    pub tls: TlsConfig,
    pub transforms: Vec<TransformEntry>,
    pub mcp: Option<McpConfig>,
    /// YAML only (never synced).
    pub mcp_gateway: Option<McpGatewayConfig>,
    pub metrics: MetricsConfig,
    pub management: ManagementConfig,
    pub control_plane: ControlPlaneConfig,
    pub log: LogConfig,
    /// iron-agent extension: eBPF interception and per-identity policies.
    pub intercept: intercept::InterceptConfig,
    /// The PostgreSQL proxy (iron-proxy §21); all-empty = disabled.
    pub postgres: postgres::PostgresConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub enabled: bool,
    pub listen: ListenAddr,
    /// Required when DNS is enabled (validated, not defaulted).
    pub proxy_ip: Option<Ipv4Addr>,
    /// `host:port` of the resolver used for passthrough names and upstream dials.
    pub upstream_resolver: Option<ListenAddr>,
    pub passthrough: Vec<String>,
    pub records: Vec<DnsRecord>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ListenAddr::any(53),
            proxy_ip: None,
            upstream_resolver: None,
            passthrough: Vec::new(),
            records: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DnsRecordType,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecordType {
    A,
    Cname,
}

impl<'de> Deserialize<'de> for DnsRecordType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Case-sensitive, as iron-proxy: `a` is refused.
        match String::deserialize(d)?.as_str() {
            "A" => Ok(Self::A),
            "CNAME" => Ok(Self::Cname),
            other => Err(serde::de::Error::custom(format!(
                "must be A or CNAME; got {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub http_listen: ListenAddr,
    pub https_listen: ListenAddr,
    pub tunnel_listen: Option<ListenAddr>,
    /// Negative = unlimited (iron-proxy compatible); 0 means the default (1 MiB).
    pub max_request_body_bytes: i64,
    /// 0 = unlimited.
    pub max_response_body_bytes: i64,
    pub upstream_response_header_timeout: GoDuration,
    /// `None` (key absent) = IMDS and loopback denied; `Some([])` = nothing denied.
    pub upstream_deny_cidrs: Option<Vec<Cidr>>,
    pub upstream_proxy: UpstreamProxyConfig,
    /// iron-agent extension: open client connections at once, all listeners together.
    pub max_connections: usize,
    /// iron-agent extension: open client connections of one client (uid, else address).
    pub max_connections_per_client: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            http_listen: ListenAddr::any(80),
            https_listen: ListenAddr::any(443),
            tunnel_listen: None,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY,
            max_response_body_bytes: 0,
            upstream_response_header_timeout: GoDuration(Duration::from_secs(30)),
            upstream_deny_cidrs: None,
            upstream_proxy: UpstreamProxyConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

pub const DEFAULT_MAX_REQUEST_BODY: i64 = 1 << 20;
/// Each proxied connection holds about two descriptors (client and upstream): 4096 stays well
/// under the agent unit's descriptor limit and a few hundred MiB of buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// An eighth of the global limit: one client (a uid, or an address) cannot take it all.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;

/// Deny list applied when `upstream_deny_cidrs` is absent: cloud metadata, loopback, the
/// unspecified ranges (a connect to `0.0.0.0` or `::` reaches this host) and link-local (every
/// cloud metadata service lives there, not only IMDS's one address). iron-proxy's default is
/// the first four only (docs/compatibility.md).
pub const DEFAULT_DENY_CIDRS: [&str; 8] = [
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "169.254.0.0/16",
    "fe80::/10",
];

impl ProxyConfig {
    /// The deny list in force: the configured one, or the defaults when the key was absent.
    pub fn effective_deny_cidrs(&self) -> Vec<ipnet::IpNet> {
        match &self.upstream_deny_cidrs {
            Some(list) => list.iter().map(|c| c.0).collect(),
            None => DEFAULT_DENY_CIDRS
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
        }
    }

    /// Request body limit in bytes; `None` = unlimited.
    pub fn request_body_limit(&self) -> Option<u64> {
        match self.max_request_body_bytes {
            n if n < 0 => None,
            0 => Some(DEFAULT_MAX_REQUEST_BODY as u64),
            n => Some(n as u64),
        }
    }

    /// Response body limit in bytes; `None` = unlimited.
    pub fn response_body_limit(&self) -> Option<u64> {
        match self.max_response_body_bytes {
            n if n <= 0 => None,
            n => Some(n as u64),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamProxyConfig {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsMode {
    #[default]
    #[serde(rename = "mitm")]
    Mitm,
    #[serde(rename = "sni-only")]
    SniOnly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub cert_cache_size: usize,
    pub leaf_cert_expiry_hours: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Mitm,
            ca_cert: None,
            ca_key: None,
            cert_cache_size: 1000,
            leaf_cert_expiry_hours: 72,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: ListenAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::any(9090),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    pub listen: Option<ListenAddr>,
    /// Defaults to `IRON_MANAGEMENT_API_KEY` when `listen` is set.
    pub api_key_env: Option<String>,
}

pub const DEFAULT_MANAGEMENT_API_KEY_ENV: &str = "IRON_MANAGEMENT_API_KEY";

impl ManagementConfig {
    /// The variable holding the bearer token, when the API is enabled (`""` = the default).
    pub fn effective_api_key_env(&self) -> Option<&str> {
        self.listen.as_ref()?;
        Some(
            self.api_key_env
                .as_deref()
                .filter(|v| !v.is_empty())
                .unwrap_or(DEFAULT_MANAGEMENT_API_KEY_ENV),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    pub poll_interval: GoDuration,
    /// Managed mode: the control plane's base URL (`IRON_CONTROL_PLANE_URL` wins; default
    /// `https://api.iron.sh`).
    pub url: Option<String>,
    /// Allows an `http://` control plane on a non-loopback address (the token and the synced
    /// credentials then cross the network in clear text).
    pub allow_insecure: bool,
    /// Managed mode: a file holding the proxy token (what `iron-agent init` writes, mode
    /// 0600); used when neither `--token` nor `IRON_PROXY_TOKEN` is given.
    pub token_file: Option<PathBuf>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            poll_interval: GoDuration(Duration::from_secs(10)),
            url: None,
            allow_insecure: false,
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    /// Not a YAML key: where `iron-agent run --summary` has the agent copy every audit line
    /// (created, never overwritten), to summarise the jail's run at its end.
    #[serde(skip)]
    pub audit_copy: Option<PathBuf>,
}

/// Parses YAML text into the typed tree. Unknown keys anywhere are errors naming the field path;
/// every block and transform is decoded on its own, so one bad block does not hide another.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let parsed = yaml::parse_document(text);
    if parsed.errors.is_empty() {
        Ok(parsed.config)
    } else {
        Err(ConfigErrors(parsed.errors))
    }
}

/// Reads, parses, applies `IRON_*` overrides from the process environment, and validates.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError::new(
            "",
            format!("reading {}: {e}", path.display()),
        ))
    })?;
    load_str(&text, &|k| std::env::var(k).ok())
}

/// As [`load`], from text and an injected environment (tests never mutate the process env).
/// Reports structural errors, then override errors, then semantic errors, all in one go.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let parsed = yaml::parse_document(text);
    let mut cfg = parsed.config;
    let mut errors = parsed.errors;
    if parsed.fatal {
        return Err(ConfigErrors(errors));
    }
    if let Err(e) = env::apply_overrides(&mut cfg, env) {
        errors.extend(e.0);
    }
    let mut semantic = Vec::new();
    validate::collect(&cfg, &parsed.transform_indices, &mut semantic);
    validate::collect_env(&cfg, &parsed.transform_indices, env, &mut semantic);
    // A block that failed to decode holds defaults; checks under it would report noise.
    semantic.retain(|e| {
        !parsed.failed_blocks.iter().any(|b| {
            e.path == *b
                || e.path
                    .strip_prefix(b)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    });
    errors.extend(semantic);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errors))
    }
}
