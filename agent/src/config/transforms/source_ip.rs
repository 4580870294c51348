//! `rules[].source_ip`: the client address a rule is limited to (iron-proxy's recent releases).
//! An IP or a CIDR; a bare IP means that one address (/32 or /128).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceIp(pub IpNet);

impl FromStr for SourceIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(SourceIp(IpNet::from(ip)));
        }
        t.parse::<IpNet>()
            .map(|n| SourceIp(n.trunc()))
            .map_err(|_| format!("invalid source_ip {s:?}: expected an IP address or CIDR"))
    }
}

impl<'de> Deserialize<'de> for SourceIp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = SourceIp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address or CIDR such as \"10.0.0.5\" or \"10.0.0.0/24\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SourceIp, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ips_are_host_routes_and_cidrs_are_truncated() {
        assert_eq!(
            "10.1.2.3".parse::<SourceIp>().unwrap().0.to_string(),
            "10.1.2.3/32"
        );
        assert_eq!("::1".parse::<SourceIp>().unwrap().0.to_string(), "::1/128");
        assert_eq!(
            "10.1.2.3/8".parse::<SourceIp>().unwrap().0.to_string(),
            "10.0.0.0/8"
        );
        assert!(
            "10.1.2"
                .parse::<SourceIp>()
                .unwrap_err()
                .contains("source_ip")
        );
    }
}
