//! Scalar config types with iron-proxy's string syntax and clear parse errors.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A listen or dial address in Go syntax: `":53"` (all interfaces), `"127.0.0.1:8080"`,
/// `"[::1]:53"`, `"localhost:9090"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    pub host: String,
    pub port: u16,
}

impl ListenAddr {
    pub fn any(port: u16) -> Self {
        Self {
            host: String::new(),
            port,
        }
    }

    /// The socket address to bind: empty host means every IPv4 interface, `localhost` loopback.
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        let ip = match self.host.as_str() {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .parse::<IpAddr>()
                .map_err(|_| format!("{h:?} is not an IP address"))?,
        };
        Ok(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid address {s:?}: expected host:port or :port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid address {s:?}: port must be a number 0-65535"))?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A CIDR prefix. Bare IPs are refused, as iron-proxy does, so that a typo never widens a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty CIDR entry".into());
        }
        if !t.contains('/') {
            return Err(format!(
                "invalid CIDR {s:?}: must be CIDR notation, e.g. 1.2.3.4/32 or ::1/128"
            ));
        }
        t.parse::<ipnet::IpNet>()
            .map(|n| Cidr(n.trunc()))
            .map_err(|e| format!("invalid CIDR {s:?}: {e}"))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A Go `time.ParseDuration` string (`"30s"`, `"1m30s"`, `"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(GoDuration)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<GoDuration, E> {
                s.parse().map_err(E::custom)
            }
            // `ttl: 0` is documented; YAML reads it as an integer. Go's ParseDuration accepts
            // a bare "0" only, so any other number is refused with the usual message.
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<GoDuration, E> {
                n.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<GoDuration, E> {
                n.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses Go duration syntax. Negative durations are rejected here (no field accepts them).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. \"30s\", \"5m\", \"1h30m\"");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
    }
    Ok(Duration::from_secs_f64(total))
}

/// `log.level`: exact lower-case strings, as iron-proxy accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            other => Err(format!(
                "unknown log level: {other:?} (expected debug, info, warn or error)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        assert_eq!(":53".parse::<ListenAddr>().unwrap(), ListenAddr::any(53));
        let a: ListenAddr = "[::1]:8443".parse().unwrap();
        assert_eq!(a.socket_addr().unwrap(), "[::1]:8443".parse().unwrap());
        assert!("nope".parse::<ListenAddr>().is_err());
        assert!("1.2.3.4:99999".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn cidr_rejects_bare_ip() {
        assert!(
            "10.0.0.1"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("must be CIDR notation")
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().0.to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_go_duration("30").is_err());
        assert!(parse_go_duration("abc").is_err());
        assert!(parse_go_duration("-5s").is_err());
    }
}
