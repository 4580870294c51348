//! Agent configs as typed values. A test starts from a preset ([`AgentConfig::loopback`]),
//! changes the fields it cares about, and the agent gets it as YAML (serde-saphyr): no string
//! templates to splice, no `.replace` on YAML text. Only the sections tests set are typed;
//! transform configs are JSON values (`json!`), the same shape the YAML has.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

/// The whole config file.
#[derive(Clone, Debug, Serialize)]
pub struct AgentConfig {
    #[serde(skip_serializing_if = "Dns::is_unset")]
    pub dns: Dns,
    #[serde(skip_serializing_if = "Proxy::is_unset")]
    pub proxy: Proxy,
    pub tls: Tls,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    pub transforms: Vec<Transform>,
    /// The top-level `mcp` block (MCP interception), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_gateway: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intercept: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Log>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Postgres>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_resolver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passthrough: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<DnsRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Proxy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_body_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_response_header_timeout: Option<String>,
    /// `None`: the key is absent, so the agent's default (loopback and private ranges denied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_deny_cidrs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<UpstreamProxy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpstreamProxy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Tls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub listen: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Log {
    pub level: String,
}

/// The `postgres:` block (the PostgreSQL proxy).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Postgres {
    pub listen: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    pub client: PostgresClient,
    pub upstreams: Vec<PostgresUpstream>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PostgresClient {
    pub user: String,
    pub password_env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// One `postgres.upstreams` entry; `dsn` is a secret source (`{"type": "env", "var": ...}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PostgresUpstream {
    pub database: String,
    pub dsn: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<PostgresSetting>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PostgresSetting {
    pub name: String,
    pub value: String,
}

/// One `transforms:` entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Transform {
    pub name: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub config: Value,
}

const ANY_PORT: &str = "127.0.0.1:0";

impl AgentConfig {
    /// For loopback tests: DNS off, every listener on a free loopback port, the MITM CA at
    /// `ca_cert`/`ca_key`, loopback upstreams allowed (`upstream_deny_cidrs: []`), upstream
    /// headers within 2 s, no transforms.
    pub fn loopback(ca_cert: &Path, ca_key: &Path) -> AgentConfig {
        AgentConfig {
            dns: Dns {
                enabled: Some(false),
                ..Dns::default()
            },
            proxy: Proxy {
                upstream_deny_cidrs: Some(Vec::new()),
                upstream_response_header_timeout: Some("2s".into()),
                ..Proxy::any_port()
            },
            tls: Tls::mitm(ca_cert, ca_key),
            metrics: Some(Metrics::any_port()),
            transforms: Vec::new(),
            mcp: None,
            mcp_gateway: None,
            intercept: None,
            log: None,
            postgres: None,
        }
    }

    /// For `iron-agent run -- CMD` (the jail): the agent's default listeners, DNS answering
    /// with 127.0.0.1, MITM with the CA at `ca_cert`/`ca_key`, no metrics, no transforms.
    pub fn jail(ca_cert: &Path, ca_key: &Path) -> AgentConfig {
        AgentConfig {
            dns: Dns {
                proxy_ip: Some("127.0.0.1".into()),
                ..Dns::default()
            },
            proxy: Proxy::default(),
            metrics: None,
            ..AgentConfig::loopback(ca_cert, ca_key)
        }
    }

    /// Appends `transforms` to the pipeline.
    pub fn transforms(mut self, transforms: impl IntoIterator<Item = Transform>) -> Self {
        self.transforms.extend(transforms);
        self
    }

    /// Adds the tunnel listener (`proxy.tunnel_listen`) on a free port.
    pub fn tunnel_listener(mut self) -> Self {
        self.proxy.tunnel_listen = Some(ANY_PORT.into());
        self
    }

    /// Upstream names resolve through `resolver` (DNS serving stays as it is).
    pub fn resolver(mut self, resolver: SocketAddr) -> Self {
        self.dns.upstream_resolver = Some(resolver.to_string());
        self
    }

    /// Any change to the value, for one-off settings: `.with(|c| c.proxy.max_request_body_bytes = Some(8))`.
    pub fn with(mut self, change: impl FnOnce(&mut AgentConfig)) -> Self {
        change(&mut self);
        self
    }

    /// The YAML file the agent reads.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("config serializes to YAML")
    }

    /// Writes the YAML to `path`; returns `path`, for `--config`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.to_yaml()).expect("write config");
        path.to_path_buf()
    }
}

impl Proxy {
    /// HTTP and HTTPS listeners on free loopback ports, everything else the agent's default.
    pub fn any_port() -> Proxy {
        Proxy {
            http_listen: Some(ANY_PORT.into()),
            https_listen: Some(ANY_PORT.into()),
            ..Proxy::default()
        }
    }

    /// Nothing set: the section is left out.
    pub fn is_unset(&self) -> bool {
        *self == Proxy::default()
    }
}

impl Dns {
    /// Nothing set: the section is left out.
    pub fn is_unset(&self) -> bool {
        *self == Dns::default()
    }
}

impl Metrics {
    pub fn any_port() -> Metrics {
        Metrics {
            listen: ANY_PORT.into(),
        }
    }
}

impl Tls {
    /// MITM with the CA at `ca_cert`/`ca_key`.
    pub fn mitm(ca_cert: &Path, ca_key: &Path) -> Tls {
        Tls {
            mode: None,
            ca_cert: Some(ca_cert.to_path_buf()),
            ca_key: Some(ca_key.to_path_buf()),
        }
    }
}

impl Transform {
    pub fn new(name: &str, config: Value) -> Transform {
        Transform {
            name: name.into(),
            config,
        }
    }

    /// `allowlist` of exactly `domains`.
    pub fn allowlist(domains: &[&str]) -> Transform {
        Transform::new("allowlist", json!({ "domains": domains }))
    }

    /// `secrets` with the given list of secret entries.
    pub fn secrets(secrets: Value) -> Transform {
        Transform::new("secrets", json!({ "secrets": secrets }))
    }
}

/// An allowlist for `localhost` only, and a `secrets` transform that swaps the placeholder
/// `proxy_value` in `header` for the value of the environment variable `var`.
pub fn allow_localhost_with_secret(var: &str, proxy_value: &str, header: &str) -> Vec<Transform> {
    vec![
        Transform::allowlist(&["localhost"]),
        Transform::secrets(json!([{
            "source": {"type": "env", "var": var},
            "replace": {"proxy_value": proxy_value, "match_headers": [header]},
            "rules": [{"host": "localhost"}],
        }])),
    ]
}

/// Replaces `{dir}` in every string of `value` (paths to files a test wrote into its temp dir).
pub fn expand_dir(value: &mut Value, dir: &Path) {
    match value {
        Value::String(s) if s.contains("{dir}") => {
            *s = s.replace("{dir}", &dir.to_string_lossy());
        }
        Value::Array(items) => items.iter_mut().for_each(|v| expand_dir(v, dir)),
        Value::Object(map) => map.values_mut().for_each(|v| expand_dir(v, dir)),
        _ => {}
    }
}
