//! `no_proxy` matching with the semantics of Go's `golang.org/x/net/http/httpproxy` (what
//! iron-proxy uses), plus our rule that names compare case-insensitively and ignore one
//! trailing dot:
//!
//! * entries are comma-separated; `*` alone bypasses the proxy for everything;
//! * `1.2.3.0/24`, `fd00::/8`: targets given as an IP in that network;
//! * `1.2.3.4`, `::1`, `1.2.3.4:8080`, `[::1]:8080`: that IP (and port, when given);
//! * `example.com` matches `example.com` and every subdomain; `.example.com` and
//!   `*.example.com` match subdomains only; `example.com:8443` also requires the port;
//! * `localhost` and loopback IPs never use a proxy, whatever the list says.
//!
//! IP entries match IP targets only and name entries match names only: the target is not
//! resolved to decide.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::policy::unmap;

#[derive(Debug, Clone, Default)]
pub struct NoProxy {
    all: bool,
    ips: Vec<IpEntry>,
    domains: Vec<DomainEntry>,
    /// Entries that can never match (bad port, empty host); reported once at startup.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone)]
enum IpEntry {
    Net(IpNet),
    Addr { ip: IpAddr, port: Option<u16> },
}

#[derive(Debug, Clone)]
struct DomainEntry {
    /// Always starts with a dot: `.example.com`.
    suffix: String,
    /// The bare name matches too (the entry had no leading `.` or `*.`).
    exact_too: bool,
    port: Option<u16>,
}

impl NoProxy {
    pub fn parse(list: &str) -> Self {
        let mut out = NoProxy::default();
        for entry in list.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                out.all = true;
                continue;
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                out.ips.push(IpEntry::Net(net.trunc()));
                continue;
            }
            let Some((host, port)) = split_host_port(&entry) else {
                out.ignored.push(entry);
                continue;
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                out.ips.push(IpEntry::Addr {
                    ip: unmap(ip),
                    port,
                });
                continue;
            }
            let host = host.strip_prefix('*').unwrap_or(host);
            let host = host.strip_suffix('.').unwrap_or(host);
            let (suffix, exact_too) = match host.strip_prefix('.') {
                Some(_) => (host.to_string(), false),
                None => (format!(".{host}"), true),
            };
            if suffix.len() < 2 {
                out.ignored.push(entry);
                continue;
            }
            out.domains.push(DomainEntry {
                suffix,
                exact_too,
                port,
            });
        }
        out
    }

    /// True when `host:port` must be dialled directly. `host` may carry IPv6 brackets.
    pub fn bypass(&self, host: &str, port: u16) -> bool {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = unmap(ip);
            if ip.is_loopback() {
                return true;
            }
            return self.all
                || self.ips.iter().any(|e| match e {
                    IpEntry::Net(net) => net.contains(&ip),
                    IpEntry::Addr { ip: want, port: p } => {
                        *want == ip && p.is_none_or(|p| p == port)
                    }
                });
        }
        self.all
            || self.domains.iter().any(|d| {
                let name_matches =
                    host.ends_with(&d.suffix) || (d.exact_too && host == d.suffix[1..]);
                name_matches && d.port.is_none_or(|p| p == port)
            })
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address. `None` for a malformed entry.
fn split_host_port(entry: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match entry.matches(':').count() {
        0 => Some((entry, None)),
        1 => {
            let (host, port) = entry.split_once(':')?;
            if host.is_empty() {
                return None;
            }
            Some((host, Some(port.parse().ok()?)))
        }
        // A bare IPv6 address (a name never has two colons).
        _ => Some((entry, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypass(list: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(list).bypass(host, port)
    }

    #[test]
    fn domains_and_subdomains() {
        let l = "example.com, .internal.corp,*.svc.local";
        assert!(bypass(l, "example.com", 443));
        assert!(bypass(l, "api.example.com", 443));
        assert!(bypass(l, "API.Example.COM.", 80));
        assert!(!bypass(l, "notexample.com", 443));
        assert!(!bypass(l, "example.com.evil", 443));
        // A leading dot or `*.` means subdomains only.
        assert!(!bypass(l, "internal.corp", 443));
        assert!(bypass(l, "db.internal.corp", 443));
        assert!(!bypass(l, "svc.local", 443));
        assert!(bypass(l, "a.b.svc.local", 443));
        assert!(!bypass(l, "other.org", 443));
        // Trailing dot in the entry is ignored too.
        assert!(bypass("example.org.", "www.example.org", 443));
    }

    #[test]
    fn ports() {
        let l = "example.com:8443,10.0.0.1:80,[fd00::1]:443";
        assert!(bypass(l, "example.com", 8443));
        assert!(!bypass(l, "example.com", 443));
        assert!(bypass(l, "10.0.0.1", 80));
        assert!(!bypass(l, "10.0.0.1", 443));
        assert!(bypass(l, "[fd00::1]", 443));
        assert!(!bypass(l, "fd00::1", 80));
    }

    #[test]
    fn ips_and_cidrs_match_ip_targets_only() {
        let l = "10.0.0.0/8,192.168.1.7,fd00::/8, 2001:db8::1";
        assert!(bypass(l, "10.1.2.3", 443));
        assert!(bypass(l, "192.168.1.7", 443));
        assert!(!bypass(l, "192.168.1.8", 443));
        assert!(bypass(l, "fd00::5", 443));
        assert!(bypass(l, "[2001:db8::1]", 443));
        assert!(bypass(l, "::ffff:10.0.0.9", 443));
        // A name is not resolved to decide.
        assert!(!bypass(l, "ten.example", 443));
    }

    #[test]
    fn star_and_loopback() {
        assert!(bypass("*", "anything.example", 443));
        assert!(bypass("*", "8.8.8.8", 53));
        // localhost and loopback are always direct, even with an empty list.
        assert!(bypass("", "localhost", 80));
        assert!(bypass("", "LOCALHOST.", 80));
        assert!(bypass("", "127.0.0.2", 80));
        assert!(bypass("", "[::1]", 80));
        assert!(!bypass("", "example.com", 443));
        assert!(!bypass("", "10.0.0.1", 443));
    }

    #[test]
    fn malformed_entries_are_reported_not_matched() {
        let n = NoProxy::parse("example.com:notaport, :80, ., ok.example,,");
        assert_eq!(n.ignored, vec!["example.com:notaport", ":80", "."]);
        assert!(n.bypass("ok.example", 443));
        assert!(!n.bypass("example.com", 443));
    }
}
