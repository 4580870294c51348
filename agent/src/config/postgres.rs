//! The top-level `postgres:` block (iron-proxy §21.1), strict, with iron-proxy's validation
//! messages (printed as `postgres: listen is required`, `postgres.upstreams[0]: dsn is required`).
//!
//! ```yaml
//! postgres:
//!   listen: "127.0.0.1:6432"
//!   tls: false                      # iron-agent: TLS towards clients with the agent's CA
//!   client:
//!     user: app_user
//!     password_env: PG_PROXY_PASSWORD
//!     auth: scram-sha-256           # iron-agent: or `password` (cleartext, iron-proxy's)
//!   upstreams:
//!     - database: appdb             # routing key; must equal the DSN's dbname
//!       dsn: {type: env, var: PG_UPSTREAM_DSN}
//!       role: tenant_role
//!       settings: [{name: app.tenant, value: acme}]
//! ```

use std::collections::HashSet;

use serde::Deserialize;

use super::transforms::SecretSource;
use super::{ConfigError, ListenAddr, TlsMode};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Required unless the whole block is empty (then the proxy is disabled).
    pub listen: Option<ListenAddr>,
    /// iron-agent extension: answer `SSLRequest` with `S` and terminate TLS with a certificate
    /// signed by the agent's CA (`tls.ca_cert`). Off (iron-proxy): `SSLRequest` gets `N`.
    pub tls: bool,
    pub client: ClientConfig,
    pub upstreams: Vec<UpstreamConfig>,
}

/// The one credential every workload logs in with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub user: String,
    /// Name of the environment variable holding the password (never the password itself).
    pub password_env: String,
    pub auth: ClientAuth,
}

/// How clients prove they know the proxy password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClientAuth {
    /// SASL SCRAM-SHA-256: the password never crosses the wire.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// AuthenticationCleartextPassword, as iron-proxy does.
    #[serde(rename = "password")]
    Password,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The routing key: the `database` a client names in its startup message.
    pub database: String,
    /// Any secret source; the value is a libpq DSN (URL or key=value form).
    pub dsn: Option<SecretSource>,
    /// `SET ROLE` after login; empty = none.
    pub role: Option<String>,
    /// Session settings applied with `set_config(name, value, false)` before `SET ROLE`.
    pub settings: Vec<Setting>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

/// Settings a client may never change on a proxied session (besides the configured ones):
/// the role, and what would make the proxy's SQL parser read a statement differently from the
/// server (see `sql`).
pub const ROLE_SETTINGS: [&str; 2] = ["role", "session_authorization"];

impl PostgresConfig {
    /// An absent or all-empty block: the proxy is off.
    pub fn is_disabled(&self) -> bool {
        self.listen.is_none()
            && !self.tls
            && self.client.user.is_empty()
            && self.client.password_env.is_empty()
            && self.upstreams.is_empty()
    }

    pub fn role_for(&self, database: &str) -> Option<&str> {
        self.upstream(database)
            .and_then(|u| u.role.as_deref())
            .filter(|r| !r.is_empty())
    }

    pub fn upstream(&self, database: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.database == database)
    }

    /// Static checks; `tls_mode` is the top-level `tls.mode` (client TLS needs the MITM CA).
    pub fn validate(&self, tls_mode: TlsMode, errors: &mut Vec<ConfigError>) {
        if self.is_disabled() {
            return;
        }
        let block = |m: &str| ConfigError::new("postgres", m);
        if self.listen.is_none() {
            errors.push(block("listen is required"));
        }
        if self.client.user.is_empty() {
            errors.push(block("client.user is required"));
        }
        if self.client.password_env.is_empty() {
            errors.push(block("client.password_env is required"));
        }
        if self.upstreams.is_empty() {
            errors.push(block("at least one upstream is required"));
        }
        if self.tls && tls_mode != TlsMode::Mitm {
            errors.push(ConfigError::new(
                "postgres.tls",
                "requires tls.mode mitm: client certificates are signed by the agent's CA",
            ));
        }
        let mut databases = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let path = format!("postgres.upstreams[{i}]");
            if !u.database.is_empty() && !databases.insert(u.database.as_str()) {
                errors.push(block(&format!(
                    "duplicate upstream database {:?}",
                    u.database
                )));
            }
            u.validate(&path, errors);
        }
    }

    /// Checks that read the environment: the client password must be set and non-empty.
    pub fn validate_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) {
        let var = &self.client.password_env;
        if self.is_disabled() || var.is_empty() {
            return;
        }
        if env(var).is_none_or(|v| v.is_empty()) {
            errors.push(ConfigError::new(
                "postgres",
                format!("client.password_env {var:?} is not set in the environment"),
            ));
        }
    }
}

impl UpstreamConfig {
    /// Checks of one upstream on its own (`path` names it in messages); also applied to the
    /// upstreams a control plane syncs.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.database.is_empty() {
            errors.push(ConfigError::new(path, "database is required"));
        }
        match &self.dsn {
            None => errors.push(ConfigError::new(path, "dsn is required")),
            Some(src) => src.validate(&format!("{path}.dsn"), errors),
        }
        validate_settings(path, &self.settings, errors);
    }
}

fn validate_settings(path: &str, settings: &[Setting], errors: &mut Vec<ConfigError>) {
    let mut seen = HashSet::new();
    for (j, s) in settings.iter().enumerate() {
        let err = |m: String| ConfigError::new(path, format!("settings[{j}]: {m}"));
        let lower = s.name.to_ascii_lowercase();
        if !valid_setting_name(&s.name) {
            errors.push(err(format!("invalid setting name {:?}", s.name)));
        } else if ROLE_SETTINGS.contains(&lower.as_str()) {
            errors.push(err(format!(
                "{lower:?} is managed by the proxy; use the role field"
            )));
        } else if !seen.insert(lower) {
            errors.push(err(format!("duplicate setting {:?}", s.name)));
        } else if s.name.eq_ignore_ascii_case("standard_conforming_strings")
            && !matches!(s.value.to_ascii_lowercase().as_str(), "on" | "true" | "1")
        {
            // The relay policy parses SQL as the server does with this setting on.
            errors.push(err(
                "standard_conforming_strings must stay on: the proxy's SQL parser assumes it"
                    .to_string(),
            ));
        }
    }
}

/// `^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`, as iron-proxy.
pub fn valid_setting_name(name: &str) -> bool {
    fn ident(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    match name.split_once('.') {
        None => ident(name),
        Some((a, b)) => ident(a) && ident(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str, env: &[(&str, &str)]) -> Vec<String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let text = format!("dns: {{enabled: false}}\ntls: {{mode: sni-only}}\n{yaml}");
        match super::super::load_str(&text, &lookup) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn empty_block_is_disabled() {
        assert!(errors("postgres: {}\n", &[]).is_empty());
        assert!(errors("postgres:\n", &[]).is_empty());
    }

    #[test]
    fn iron_proxy_messages() {
        let e = errors(
            "postgres:\n  tls: false\n  upstreams: []\n  client: {user: ''}\n  listen: ''\n",
            &[],
        );
        // `listen: ''` is not an address: a parse error for that field.
        assert!(
            e[0].starts_with("postgres.listen: invalid address"),
            "{e:?}"
        );
        let e = errors("postgres:\n  client: {user: app}\n", &[]);
        assert_eq!(
            e,
            [
                "postgres: listen is required",
                "postgres: client.password_env is required",
                "postgres: at least one upstream is required",
            ]
        );
        let yaml = r#"postgres:
  listen: ":6432"
  client: {user: app, password_env: PW}
  upstreams:
    - {database: appdb, dsn: {type: env, var: D}, settings: [{name: app.tenant, value: x}, {name: app-x, value: y}, {name: ROLE, value: z}, {name: App.Tenant, value: w}, {name: session_authorization, value: v}]}
    - {database: appdb, dsn: {type: env, var: D}}
    - {dsn: {type: env, var: ""}}
    - {database: other}
"#;
        let e = errors(yaml, &[]);
        assert_eq!(
            e,
            [
                r#"postgres.upstreams[0]: settings[1]: invalid setting name "app-x""#,
                r#"postgres.upstreams[0]: settings[2]: "role" is managed by the proxy; use the role field"#,
                r#"postgres.upstreams[0]: settings[3]: duplicate setting "App.Tenant""#,
                r#"postgres.upstreams[0]: settings[4]: "session_authorization" is managed by the proxy; use the role field"#,
                r#"postgres: duplicate upstream database "appdb""#,
                "postgres.upstreams[2]: database is required",
                r#"postgres.upstreams[2].dsn.var: env source requires "var" field"#,
                "postgres.upstreams[3]: dsn is required",
                r#"postgres: client.password_env "PW" is not set in the environment"#,
            ]
        );
        assert!(
            errors(
                yaml.split("    - {database: appdb, dsn: {type: env, var: D}}\n")
                    .next()
                    .unwrap(),
                &[("PW", "x")]
            )
            .len()
                == 4
        );
    }

    #[test]
    fn strict_keys_and_extensions() {
        let e = errors(
            "postgres:\n  listen: ':1'\n  client: {user: a, password_env: P, auth: md5}\n  upstreams: [{database: d, dsn: {type: env, var: D}, rol: x}]\n",
            &[("P", "x")],
        );
        assert!(
            e.iter()
                .any(|m| m.contains("postgres.client.auth") && m.contains("unknown variant")),
            "{e:?}"
        );
        let e = errors(
            "postgres:\n  listen: ':1'\n  client: {user: a, password_env: P}\n  upstreams: [{database: d, dsn: {type: env, var: D}, rol: x}]\n",
            &[("P", "x")],
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("postgres.upstreams[0].rol: unknown field")),
            "{e:?}"
        );
        let e = errors(
            "postgres:\n  listen: ':1'\n  tls: true\n  client: {user: a, password_env: P, auth: password}\n  upstreams: [{database: d, dsn: {type: env, var: D}}]\n",
            &[("P", "x")],
        );
        assert_eq!(
            e,
            [
                "postgres.tls: requires tls.mode mitm: client certificates are signed by the agent's CA"
            ]
        );
    }

    #[test]
    fn setting_names() {
        for ok in ["app.tenant", "search_path", "_x.y_1", "TimeZone"] {
            assert!(valid_setting_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a.b.c", "a-b", "a.", ".a", "a b", "a;b"] {
            assert!(!valid_setting_name(bad), "{bad}");
        }
    }
}
