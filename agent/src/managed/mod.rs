//! Managed mode: the agent as a control-plane client (iron-proxy §20).
//!
//! A proxy token (`--token`, `-token` or `IRON_PROXY_TOKEN`) selects managed mode. Listeners,
//! TLS, DNS, interception and other host settings stay in the local YAML; the top-level
//! pipeline (and MCP policy) come from `POST {url}/api/v1/proxy/sync` ([`client`]), mapped as
//! iron-proxy maps them ([`apply`]) and applied through the reload swap (all or nothing; a
//! rejected answer keeps the old state and the old hash). The poller (`app::sync`) syncs at start, then
//! every `control_plane.poll_interval` ±10 %, or at once on `POST /v1/sync`; failures retry
//! with capped exponential backoff ([`backoff`]) and never block startup: until the first sync
//! is applied every request is refused with 503 and `/readyz` says so. An answer's
//! `ingest_token` and `tags` drive the audit export to the control plane ([`ingest`]).

pub mod apply;
pub mod backoff;
pub mod client;
pub mod ingest;
pub mod postgres;

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::ControlPlaneConfig;
pub use crate::config::validate::check_url_syntax;
use crate::secrets::SecretValue;

/// iron-proxy's default control plane.
pub const DEFAULT_URL: &str = "https://api.iron.sh";

/// Why managed mode cannot start or must stop.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// A bad control-plane setting; `field` names where it came from.
    #[error("{field}: {reason}")]
    Setting { field: &'static str, reason: String },
    /// The control plane says this proxy was deleted: stop serving.
    #[error("this proxy was revoked on the control plane ({0}); stopping")]
    Revoked(String),
}

/// Managed-mode settings resolved from the command line, environment and YAML.
pub struct Settings {
    pub url: String,
    /// The proxy token; `Debug`/`Display` print `[redacted]`.
    pub token: SecretValue,
    pub poll_interval: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// `None` without a token (standalone mode). The token is `--token` if given, else
    /// `IRON_PROXY_TOKEN`, else the content of `control_plane.token_file`; the URL is `control_plane.url` after the `IRON_CONTROL_PLANE_URL`
    /// override (applied when the config was loaded), else [`DEFAULT_URL`].
    pub fn resolve(
        cli_token: Option<String>,
        cfg: &ControlPlaneConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ManagedError> {
        let token = cli_token
            .filter(|t| !t.is_empty())
            .or_else(|| env("IRON_PROXY_TOKEN").filter(|t| !t.is_empty()));
        let token = match (token, &cfg.token_file) {
            (Some(t), _) => t,
            (None, Some(path)) => read_token_file(path)?,
            (None, None) => return Ok(None),
        };
        if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(ManagedError::Setting {
                field: "token",
                reason: "contains characters not allowed in an HTTP header".into(),
            });
        }
        let field = if env("IRON_CONTROL_PLANE_URL").is_some_and(|v| !v.is_empty()) {
            "IRON_CONTROL_PLANE_URL"
        } else {
            "control_plane.url"
        };
        let url = cfg.url.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
        check_url_syntax(&url).map_err(|reason| ManagedError::Setting { field, reason })?;
        check_transport(&url, cfg.allow_insecure)
            .map_err(|reason| ManagedError::Setting { field, reason })?;
        Ok(Some(Self {
            url: url.trim_end_matches('/').to_string(),
            token: SecretValue::new(token),
            poll_interval: cfg.poll_interval.0,
        }))
    }
}

/// The proxy token stored by `iron-agent init`: the file's content without surrounding
/// whitespace. Errors name the file, never its content.
pub fn read_token_file(path: &std::path::Path) -> Result<String, ManagedError> {
    let setting = |reason: String| ManagedError::Setting {
        field: "control_plane.token_file",
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| setting(format!("reading {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(setting(format!("{} is empty", path.display())));
    }
    Ok(token.to_string())
}

/// Plain HTTP only to a loopback address, unless explicitly allowed: the token and every
/// synced credential travel in that connection.
pub fn check_transport(url: &str, allow_insecure: bool) -> Result<(), String> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Ok(()); // reported by check_url_syntax
    };
    if uri.scheme_str() != Some("http") || allow_insecure {
        return Ok(());
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is plain http:// to a non-loopback host; use https:// (or set control_plane.allow_insecure: true)"
        ))
    }
}

/// `GET /v1/status` in managed mode.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Status {
    /// The hash of the config in force (`""` before the first sync).
    pub config_hash: String,
    pub principal_id: Option<String>,
    /// `assigned` or `unassigned`, as the control plane said.
    pub principal_status: Option<String>,
    pub synced_once: bool,
    /// RFC 3339, UTC: the last sync that succeeded (applied, or unchanged).
    pub last_sync_at: Option<String>,
}

/// What the poller and the management API share.
#[derive(Debug, Default)]
pub struct State {
    status: std::sync::Mutex<Status>,
    poke: Notify,
}

impl State {
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut guard = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard);
    }

    /// `POST /v1/sync`: sync now (one request is queued while a sync runs).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Resolves at the next [`State::poke`] (or at once for one made meanwhile).
    pub async fn poked(&self) {
        self.poke.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: Option<&str>, insecure: bool) -> ControlPlaneConfig {
        ControlPlaneConfig {
            url: url.map(str::to_string),
            allow_insecure: insecure,
            ..ControlPlaneConfig::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn no_token_is_standalone() {
        assert!(
            Settings::resolve(None, &cfg(None, false), &no_env)
                .unwrap()
                .is_none()
        );
        assert!(
            Settings::resolve(Some(String::new()), &cfg(None, false), &no_env)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn token_from_flag_or_env_and_default_url() {
        let env = |k: &str| (k == "IRON_PROXY_TOKEN").then(|| "iprx_env".to_string());
        let s = Settings::resolve(None, &cfg(None, false), &env)
            .unwrap()
            .unwrap();
        assert_eq!(s.token.expose(), "iprx_env");
        assert_eq!(s.url, DEFAULT_URL);
        let s = Settings::resolve(Some("iprx_flag".into()), &cfg(None, false), &env)
            .unwrap()
            .unwrap();
        assert_eq!(s.token.expose(), "iprx_flag");
        assert!(!format!("{s:?}").contains("iprx_flag"));
    }

    #[test]
    fn token_file_is_the_last_resort() {
        let dir = std::env::temp_dir().join(format!("ia-token-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy-token");
        std::fs::write(&path, "iprx_from_file\n").unwrap();
        let mut c = cfg(None, false);
        c.token_file = Some(path.clone());
        let s = Settings::resolve(None, &c, &no_env).unwrap().unwrap();
        assert_eq!(s.token.expose(), "iprx_from_file");
        let s = Settings::resolve(Some("iprx_flag".into()), &c, &no_env)
            .unwrap()
            .unwrap();
        assert_eq!(s.token.expose(), "iprx_flag");
        std::fs::write(&path, " \n").unwrap();
        let e = Settings::resolve(None, &c, &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("control_plane.token_file: ") && e.ends_with("is empty"),
            "{e}"
        );
        c.token_file = Some(dir.join("missing"));
        let e = Settings::resolve(None, &c, &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("reading ") && e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        let t = || Some("iprx_t".to_string());
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:9",
            "https://cp.example",
        ] {
            assert!(
                Settings::resolve(t(), &cfg(Some(ok), false), &no_env).is_ok(),
                "{ok}"
            );
        }
        let e = Settings::resolve(t(), &cfg(Some("http://cp.example"), false), &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("control_plane.url: "), "{e}");
        assert!(e.contains("allow_insecure"), "{e}");
        assert!(Settings::resolve(t(), &cfg(Some("http://cp.example"), true), &no_env).is_ok());
        assert!(check_url_syntax("ftp://x").is_err());
        assert!(check_url_syntax("https://x/?a=b").is_err());
        assert!(check_url_syntax("not a url").is_err());
    }
}
