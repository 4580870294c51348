//! `proxy.upstream_proxy`: every upstream dial goes through an operator-configured proxy unless
//! `no_proxy` (or the built-in localhost/loopback rule) says otherwise.
//!
//! Which proxy: the destination's scheme picks `http_proxy` (plain HTTP) or `https_proxy`
//! (HTTPS, and raw dials of TLS destinations). Per field, a non-empty `HTTP_PROXY` /
//! `http_proxy`, `HTTPS_PROXY` / `https_proxy`, `NO_PROXY` / `no_proxy` (upper case first)
//! overrides the YAML value, as in iron-proxy. How: HTTP and HTTPS proxies get `CONNECT
//! host:port` for every destination, plain HTTP included, so that the connector always hands
//! back a byte stream to the origin (pooled requests, WebSocket and raw dials alike); SOCKS5
//! proxies get a SOCKS CONNECT. See `dial.rs` for how `upstream_deny_cidrs` applies.

mod dial;
mod no_proxy;
mod stream;
mod url;

use tokio_rustls::TlsConnector;

use crate::config::UpstreamProxyConfig;
use crate::tls::{self, TlsError};
use crate::upstream::DenyList;

pub(super) use dial::dial;
pub use no_proxy::NoProxy;
pub use stream::DialedStream;
pub use url::{ProxyKind, ProxyUrl, UrlError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// `field` is the YAML path or the environment variable the value came from.
    #[error("{field}: invalid proxy URL {shown:?}: {error}")]
    Url {
        field: String,
        shown: String,
        error: UrlError,
    },
    #[error("TLS towards the upstream proxy: {0}")]
    Tls(#[from] TlsError),
}

/// The effective upstream proxy settings (YAML merged with the environment), parsed.
#[derive(Clone, Default)]
pub struct UpstreamProxies {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    no_proxy: NoProxy,
    /// TLS towards `https://` proxies: the upstream roots, ALPN `http/1.1` only.
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for UpstreamProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProxies")
            .field("http", &self.http.as_ref().map(ToString::to_string))
            .field("https", &self.https.as_ref().map(ToString::to_string))
            .field("no_proxy", &self.no_proxy)
            .finish_non_exhaustive()
    }
}

impl UpstreamProxies {
    /// `cfg` overlaid with the environment, parsed, without the TLS set-up (what `check-config`
    /// runs). `env` is injected so tests never touch the process environment. Every bad value
    /// is reported, not just the first.
    pub fn parse(
        cfg: &UpstreamProxyConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ProxyConfigError>> {
        let pick = |vars: [&str; 2], yaml: &Option<String>, field: &str| {
            vars.iter()
                .find_map(|v| {
                    env(v)
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| (s, v.to_string()))
                })
                .or_else(|| {
                    yaml.clone()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| (s, format!("proxy.upstream_proxy.{field}")))
                })
        };
        let mut errors = Vec::new();
        let mut parse = |value: Option<(String, String)>| {
            let (raw, field) = value?;
            ProxyUrl::parse(&raw)
                .map_err(|error| {
                    errors.push(ProxyConfigError::Url {
                        field,
                        shown: redact(&raw),
                        error,
                    })
                })
                .ok()
        };
        let http = parse(pick(
            ["HTTP_PROXY", "http_proxy"],
            &cfg.http_proxy,
            "http_proxy",
        ));
        let https = parse(pick(
            ["HTTPS_PROXY", "https_proxy"],
            &cfg.https_proxy,
            "https_proxy",
        ));
        let no_proxy = pick(["NO_PROXY", "no_proxy"], &cfg.no_proxy, "no_proxy")
            .map(|(list, _)| NoProxy::parse(&list))
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            http,
            https,
            no_proxy,
            tls: None,
        })
    }

    /// [`UpstreamProxies::parse`], then the TLS client for `https://` proxies (the upstream
    /// roots, ALPN `http/1.1` only).
    pub fn from_config(
        cfg: &UpstreamProxyConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ProxyConfigError>> {
        let mut out = Self::parse(cfg, env)?;
        let needs_tls = [&out.http, &out.https]
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| p.kind == ProxyKind::Https));
        if needs_tls {
            let c = tls::upstream_client_config_with_alpn(vec![tls::ALPN_HTTP11.to_vec()])
                .map_err(|e| vec![e.into()])?;
            out.tls = Some(TlsConnector::from(c));
        }
        Ok(out)
    }

    /// From the process environment.
    pub fn from_env_and_config(cfg: &UpstreamProxyConfig) -> Result<Self, Vec<ProxyConfigError>> {
        Self::from_config(cfg, &|k| std::env::var(k).ok())
    }

    /// What [`UpstreamProxies::parse`] finds wrong, given the process environment.
    pub fn check(cfg: &UpstreamProxyConfig) -> Vec<String> {
        match Self::parse(cfg, &|k| std::env::var(k).ok()) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    pub fn http(&self) -> Option<&ProxyUrl> {
        self.http.as_ref()
    }

    pub fn https(&self) -> Option<&ProxyUrl> {
        self.https.as_ref()
    }

    pub fn no_proxy(&self) -> &NoProxy {
        &self.no_proxy
    }

    /// The proxy for a destination, or `None` to dial it directly. `https` is the
    /// destination's scheme (TLS destinations use `https_proxy`).
    pub fn route(&self, https: bool, host: &str, port: u16) -> Option<&ProxyUrl> {
        let proxy = if https { &self.https } else { &self.http };
        let proxy = proxy.as_ref()?;
        (!self.no_proxy.bypass(host, port)).then_some(proxy)
    }

    /// One startup line with the effective settings (never credentials), plus warnings for
    /// settings that cannot work as written.
    pub fn log_startup(&self, deny: &DenyList) {
        if self.is_empty() {
            return;
        }
        let show = |p: &Option<ProxyUrl>| p.as_ref().map_or("none".into(), ToString::to_string);
        tracing::info!(
            http_proxy = %show(&self.http),
            https_proxy = %show(&self.https),
            "upstream proxy active"
        );
        if !self.no_proxy.ignored.is_empty() {
            tracing::warn!(
                entries = %self.no_proxy.ignored.join(","),
                "no_proxy entries ignored: not a host, IP, CIDR or host:port"
            );
        }
        for p in [&self.http, &self.https].into_iter().flatten() {
            if let Some(net) = p.host.parse().ok().and_then(|ip| deny.check(ip)) {
                tracing::warn!(
                    proxy = %p,
                    cidr = %net,
                    "upstream proxy address is in upstream_deny_cidrs: requests through it will fail"
                );
            }
        }
    }

    fn tls(&self) -> Option<&TlsConnector> {
        self.tls.as_ref()
    }
}

/// An unparsable value may still hold credentials: drop everything before the last `@`.
fn redact(raw: &str) -> String {
    match raw.rsplit_once('@') {
        Some((before, host)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://[redacted]@{host}"),
            None => format!("[redacted]@{host}"),
        },
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(http: Option<&str>, https: Option<&str>, no: Option<&str>) -> UpstreamProxyConfig {
        UpstreamProxyConfig {
            http_proxy: http.map(Into::into),
            https_proxy: https.map(Into::into),
            no_proxy: no.map(Into::into),
        }
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_overrides_yaml_per_field() {
        let c = cfg(
            Some("http://yaml-http:1"),
            Some("http://yaml-https:2"),
            Some("yaml.example"),
        );
        let p = UpstreamProxies::from_config(
            &c,
            &env(&[
                ("https_proxy", "http://env-lower:3"),
                ("HTTPS_PROXY", "http://env-upper:4"),
                ("HTTP_PROXY", ""),
                ("no_proxy", "env.example"),
            ]),
        )
        .unwrap();
        // Empty variables do not override; upper case wins over lower case.
        assert_eq!(p.http().unwrap().to_string(), "http://yaml-http:1");
        assert_eq!(p.https().unwrap().to_string(), "http://env-upper:4");
        assert!(p.no_proxy().bypass("env.example", 443));
        assert!(!p.no_proxy().bypass("yaml.example", 443));
        let only_env = UpstreamProxies::from_config(
            &cfg(None, None, None),
            &env(&[("http_proxy", "socks5h://env:1080")]),
        )
        .unwrap();
        assert_eq!(
            only_env.http().unwrap().kind,
            ProxyKind::Socks5 { remote_dns: true }
        );
        assert!(only_env.https().is_none());
    }

    #[test]
    fn route_by_scheme_and_no_proxy() {
        let p = UpstreamProxies::from_config(
            &cfg(
                Some("http://h:1"),
                Some("socks5://s:2"),
                Some("direct.example"),
            ),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            p.route(false, "a.example", 80).unwrap().to_string(),
            "http://h:1"
        );
        assert_eq!(
            p.route(true, "a.example", 443).unwrap().to_string(),
            "socks5://s:2"
        );
        assert!(p.route(true, "x.direct.example", 443).is_none());
        assert!(p.route(true, "localhost", 443).is_none());
        assert!(p.route(false, "127.0.0.1", 80).is_none());
        let none = UpstreamProxies::from_config(&cfg(None, None, None), &env(&[])).unwrap();
        assert!(none.is_empty());
        assert!(none.route(true, "a.example", 443).is_none());
    }

    #[test]
    fn bad_values_are_all_reported_without_credentials() {
        let errs = UpstreamProxies::from_config(
            &cfg(Some("ftp://u:hunter2@h:1"), None, None),
            &env(&[("HTTPS_PROXY", "http://u:hunter2@bad host/")]),
        )
        .unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].starts_with("proxy.upstream_proxy.http_proxy: "),
            "{msgs:?}"
        );
        assert!(
            msgs[0].contains("unsupported proxy scheme \"ftp\""),
            "{msgs:?}"
        );
        assert!(msgs[1].starts_with("HTTPS_PROXY: "), "{msgs:?}");
        assert!(msgs.iter().all(|m| !m.contains("hunter2")), "{msgs:?}");
    }
}
