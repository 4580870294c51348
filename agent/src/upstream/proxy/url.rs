//! One proxy address: `http://`, `https://`, `socks5://` or `socks5h://`, optionally with
//! `user:password@`. The credentials are kept apart from everything that is ever printed.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use percent_encoding::percent_decode_str;

use crate::secrets::SecretValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// HTTP CONNECT over plain TCP.
    Http,
    /// HTTP CONNECT over TLS to the proxy.
    Https,
    /// SOCKS5; `remote_dns` (`socks5h://`) sends the name, otherwise the agent resolves it.
    Socks5 { remote_dns: bool },
}

#[derive(Clone)]
pub struct Credentials {
    pub user: SecretValue,
    pub password: SecretValue,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct ProxyUrl {
    pub kind: ProxyKind,
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
    /// `scheme://host:port`, never with credentials: the only form that is logged.
    shown: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid URL")]
    Syntax,
    #[error("unsupported proxy scheme {0:?} (use http, https, socks5 or socks5h)")]
    Scheme(String),
    #[error("missing proxy host")]
    NoHost,
    #[error("a proxy URL has no path, query or fragment")]
    Path,
    #[error("user name or password is not valid UTF-8 after percent-decoding")]
    Credentials,
}

impl ProxyUrl {
    /// Parses like Go's `httpproxy`: a value without `scheme://` is taken as `http://`.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let raw = raw.trim();
        let with_scheme;
        let raw = if raw.contains("://") {
            raw
        } else {
            with_scheme = format!("http://{raw}");
            &with_scheme
        };
        let uri: http::Uri = raw.parse().map_err(|_| UrlError::Syntax)?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let (kind, default_port) = match scheme.as_str() {
            "http" => (ProxyKind::Http, 80),
            "https" => (ProxyKind::Https, 443),
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            _ => return Err(UrlError::Scheme(scheme)),
        };
        if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
            return Err(UrlError::Path);
        }
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let credentials = match authority.as_str().rsplit_once('@') {
            Some((userinfo, _)) => Some(credentials(userinfo)?),
            None => None,
        };
        let host = host.to_ascii_lowercase();
        let shown = if host.contains(':') {
            format!("{scheme}://[{host}]:{port}")
        } else {
            format!("{scheme}://{host}:{port}")
        };
        Ok(Self {
            kind,
            host,
            port,
            credentials,
            shown,
        })
    }

    /// `Proxy-Authorization: Basic …` for HTTP(S) proxies with credentials; marked sensitive so
    /// hyper never prints it.
    pub fn basic_auth(&self) -> Option<HeaderValue> {
        let c = self.credentials.as_ref()?;
        let token = STANDARD.encode(format!("{}:{}", c.user.expose(), c.password.expose()));
        let mut v = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

fn credentials(userinfo: &str) -> Result<Credentials, UrlError> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|v| SecretValue::new(v.into_owned()))
            .map_err(|_| UrlError::Credentials)
    };
    Ok(Credentials {
        user: decode(user)?,
        password: decode(password)?,
    })
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_default_ports() {
        let cases = [
            ("http://proxy.corp", ProxyKind::Http, 80),
            ("https://proxy.corp", ProxyKind::Https, 443),
            (
                "socks5://proxy.corp",
                ProxyKind::Socks5 { remote_dns: false },
                1080,
            ),
            (
                "SOCKS5H://proxy.corp:9050",
                ProxyKind::Socks5 { remote_dns: true },
                9050,
            ),
            ("proxy.corp:3128", ProxyKind::Http, 3128),
            ("127.0.0.1:3128", ProxyKind::Http, 3128),
        ];
        for (raw, kind, port) in cases {
            let p = ProxyUrl::parse(raw).unwrap();
            assert_eq!((p.kind, p.port), (kind, port), "{raw}");
            assert!(p.credentials.is_none());
        }
        let p = ProxyUrl::parse("http://[::1]:8080/").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let p = ProxyUrl::parse("http://al%40ice:s3cr%3At@proxy.corp:3128").unwrap();
        let c = p.credentials.as_ref().unwrap();
        assert_eq!(c.user.expose(), "al@ice");
        assert_eq!(c.password.expose(), "s3cr:t");
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cr") && !dbg.contains("al%40ice"), "{dbg}");
        let auth = p.basic_auth().unwrap();
        assert!(auth.is_sensitive());
        // base64("al@ice:s3cr:t")
        assert_eq!(auth.to_str().unwrap(), "Basic YWxAaWNlOnMzY3I6dA==");
        let user_only = ProxyUrl::parse("socks5://bob@proxy.corp").unwrap();
        assert_eq!(user_only.credentials.unwrap().password.expose(), "");
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert!(matches!(
            ProxyUrl::parse("ftp://proxy.corp"),
            Err(UrlError::Scheme(s)) if s == "ftp"
        ));
        assert_eq!(
            ProxyUrl::parse("http://proxy.corp/path").unwrap_err(),
            UrlError::Path
        );
        assert!(ProxyUrl::parse("http://").is_err());
        assert!(ProxyUrl::parse("http://exa mple").is_err());
        assert_eq!(
            ProxyUrl::parse("http://u:%ff@proxy.corp").unwrap_err(),
            UrlError::Credentials
        );
    }
}
