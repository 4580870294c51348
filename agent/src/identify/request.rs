//! Identify, request level: where does this request go? Derives the destination (scheme,
//! authority, host) from the Host header or absolute-form URI, and refuses requests whose
//! identity is ambiguous (missing Host, dot segments, TLS SNI naming a different host).

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use percent_encoding::percent_decode_str;

use super::host::HostName;

/// Where a request goes, as decided before any transform runs. Transforms cannot re-route.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    /// Host[:port] exactly as the client named it (audit `host`, upstream `Host`).
    pub authority: Authority,
    /// Host for matching: port stripped, normalised.
    pub host: HostName,
    /// Percent-decoded path (rules and audit).
    pub decoded_path: String,
}

impl Target {
    /// Absolute upstream URI: `scheme://authority/path?query`, path kept raw (so `%2F` survives).
    pub fn upstream_uri(&self, original: &Uri) -> Result<Uri, http::Error> {
        // Per-request hot path: reuse the parsed (shared-buffer) path-and-query instead of
        // formatting and re-parsing a string; only a target without a leading '/' is rebuilt.
        let pq = match original.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
            Some(pq) => format!("/{pq}").parse()?,
            None => PathAndQuery::from_static("/"),
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Ok(Uri::from_parts(parts)?)
    }

    /// The port to dial: explicit, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }
}

/// Why a request was refused before the pipeline. Each maps to a 400 with iron-proxy's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHost,
    DotSegments,
    SniMismatch,
}

impl Refusal {
    pub fn body(self) -> &'static str {
        match self {
            Refusal::MissingHost => "missing Host header\n",
            Refusal::DotSegments => "path contains dot segments\n",
            Refusal::SniMismatch => "SNI and Host header mismatch\n",
        }
    }

    /// The audit `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingHost => "missing_host",
            Refusal::DotSegments => "dot_segments",
            Refusal::SniMismatch => "sni_host_mismatch",
        }
    }
}

/// Identifies an HTTP request. `sni` is the TLS server name when the connection is TLS.
/// On refusal the best-known host is returned for the audit record.
pub fn identify<B>(
    req: &http::Request<B>,
    scheme: Scheme,
    sni: Option<&str>,
) -> Result<Target, (Refusal, String)> {
    let authority = authority_of(req);
    let Some(authority) = authority else {
        return Err((Refusal::MissingHost, String::new()));
    };
    let host = HostName::new(authority.host());
    let decoded_path = percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    if decoded_path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err((Refusal::DotSegments, authority.to_string()));
    }
    if let Some(sni) = sni
        && HostName::new(sni) != host
    {
        return Err((Refusal::SniMismatch, authority.to_string()));
    }
    Ok(Target {
        scheme,
        authority,
        host,
        decoded_path,
    })
}

/// Absolute-form URI authority first (proxy-style requests), then the Host header.
fn authority_of<B>(req: &http::Request<B>) -> Option<Authority> {
    if let Some(a) = req.uri().authority() {
        return Some(a.clone());
    }
    let h = req.headers().get(http::header::HOST)?.to_str().ok()?;
    if h.is_empty() {
        return None;
    }
    h.parse::<Authority>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_header_and_absolute_form() {
        let t = identify(&req("/a", Some("Example.COM.:8080")), Scheme::HTTP, None).unwrap();
        assert_eq!(t.host, "example.com");
        assert_eq!(t.port(), 8080);
        let t = identify(&req("http://x.org/p?q=1", None), Scheme::HTTP, None).unwrap();
        assert_eq!(t.authority.as_str(), "x.org");
        assert_eq!(
            t.upstream_uri(&"http://x.org/p?q=1".parse().unwrap())
                .unwrap(),
            "http://x.org/p?q=1"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            identify(&req("/", None), Scheme::HTTP, None).unwrap_err().0,
            Refusal::MissingHost
        );
        for p in ["/a/../b", "/%2e%2e/x", "/./x", "/a/."] {
            assert_eq!(
                identify(&req(p, Some("h")), Scheme::HTTP, None)
                    .unwrap_err()
                    .0,
                Refusal::DotSegments,
                "{p}"
            );
        }
        assert!(identify(&req("/a/..b", Some("h")), Scheme::HTTP, None).is_ok());
        assert!(identify(&req("/.well-known/x", Some("h")), Scheme::HTTP, None).is_ok());
        assert_eq!(
            identify(&req("/", Some("a.com")), Scheme::HTTPS, Some("b.com"))
                .unwrap_err()
                .0,
            Refusal::SniMismatch
        );
        assert!(identify(&req("/", Some("A.com:443")), Scheme::HTTPS, Some("a.COM.")).is_ok());
    }
}
