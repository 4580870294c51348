//! Host names as the policy compares them.

use std::fmt;
use std::ops::Deref;

/// A destination host normalised for matching: IPv6 brackets removed, lower-cased, one trailing
/// dot dropped (our decision 2: names compare case-insensitively and ignore a trailing dot).
/// IP literals are kept as written inside the brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HostName(String);

impl HostName {
    /// Normalises `raw` (`Example.COM.`, `[::1]`, `10.0.0.1`).
    pub fn new(raw: &str) -> Self {
        let h = raw
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(raw);
        HostName(normalize(h))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The host as an IP address, when it is an IP literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.parse().ok()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Lower-cases a host name or pattern and drops one trailing dot.
pub fn normalize(h: &str) -> String {
    let h = h.strip_suffix('.').unwrap_or(h);
    h.to_ascii_lowercase()
}

impl Deref for HostName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for HostName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for HostName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_dot_and_brackets() {
        assert_eq!(HostName::new("Example.COM."), "example.com");
        assert_eq!(HostName::new("[::1]"), "::1");
        assert_eq!(HostName::new("[::1]").ip(), Some("::1".parse().unwrap()));
        assert_eq!(HostName::new("a.test..").as_str(), "a.test.");
        assert!(HostName::new("a.test").ip().is_none());
    }
}
