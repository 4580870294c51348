//! Upstream DSNs in both libpq forms: `postgres://user:pass@host:5432/db?sslmode=verify-full`
//! and `host=db.internal port=5432 dbname=db user=u password='p w'`.
//!
//! Keywords follow libpq (and Go's pgconn, which iron-proxy uses): connection keywords are
//! consumed here, any other keyword is sent as a run-time parameter in the startup message
//! (`application_name`, `search_path`, ...), and libpq keywords the proxy cannot honour
//! (client certificates, Kerberos, ...) are refused rather than silently ignored. Unlike libpq,
//! nothing is taken from the agent's environment (`PGHOST`, `PGPASSWORD`, ...).
//!
//! Errors never contain the DSN or any value from it, only keyword names and parts: a value can
//! hold a password fragment when a URL's password has an unencoded `/` (`postgres://u:ab/cd@h/db`
//! splits into host `u`, port `ab` and database `cd@h/db`).

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use crate::secrets::SecretValue;

pub const DEFAULT_PORT: u16 = 5432;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// Plain first (libpq falls back to TLS if plain fails; the proxy does not).
    Allow,
    /// TLS if the server offers it, unverified; plain otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS, unverified (verify-ca when `sslrootcert` is given, as libpq).
    Require,
    /// TLS, chain verified, host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<Self, DsnError> {
        Ok(match v {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return Err(DsnError::BadValue("sslmode")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// One `host:port` to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed DSN. `Debug` never shows the password (it is a [`SecretValue`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    pub hosts: Vec<HostPort>,
    pub user: Option<String>,
    pub password: Option<SecretValue>,
    pub dbname: Option<String>,
    pub sslmode: SslMode,
    /// A PEM file of trusted roots, or `system`.
    pub sslrootcert: Option<String>,
    /// Run-time parameters for the startup message (keywords this module does not consume).
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    #[error("invalid DSN: {0}")]
    Syntax(&'static str),
    /// Names the keyword only: the value could be part of a password.
    #[error("invalid DSN: invalid value for {0}")]
    BadValue(&'static str),
    #[error("invalid DSN: {0} is not supported by the proxy")]
    Unsupported(&'static str),
    #[error("invalid DSN: unix-domain socket hosts are not supported")]
    UnixSocket,
}

/// libpq keywords the proxy cannot honour; refusing them beats ignoring a security setting.
const UNSUPPORTED: [&str; 14] = [
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslcertmode",
    "requirepeer",
    "krbsrvname",
    "gsslib",
    "gssencmode",
    "service",
    "passfile",
    "replication",
    "sslnegotiation",
];

/// libpq keywords that only tune the client library; accepted and ignored.
const IGNORED: [&str; 11] = [
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "load_balance_hosts",
    "sslsni",
    "channel_binding",
    "fallback_application_name",
];

impl Dsn {
    pub fn parse(s: &str) -> Result<Self, DsnError> {
        let s = s.trim();
        let pairs = match s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            Some(rest) => url_pairs(rest)?,
            None => keyword_pairs(s)?,
        };
        Self::from_pairs(pairs)
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, DsnError> {
        let mut d = Dsn {
            hosts: Vec::new(),
            user: None,
            password: None,
            dbname: None,
            sslmode: SslMode::default(),
            sslrootcert: None,
            params: Vec::new(),
        };
        let (mut hosts, mut ports) = (String::new(), String::new());
        for (k, v) in pairs {
            match k.as_str() {
                "host" | "hostaddr" => hosts = v,
                "port" => ports = v,
                "user" => d.user = Some(v).filter(|v| !v.is_empty()),
                "password" => d.password = Some(SecretValue::new(v)),
                "dbname" => d.dbname = Some(v).filter(|v| !v.is_empty()),
                "sslmode" => d.sslmode = SslMode::parse(&v)?,
                "sslrootcert" => d.sslrootcert = Some(v).filter(|v| !v.is_empty()),
                k if UNSUPPORTED.contains(&k) => {
                    let name = UNSUPPORTED
                        .iter()
                        .find(|u| **u == k)
                        .map_or("a keyword", |u| u);
                    return Err(DsnError::Unsupported(name));
                }
                k if IGNORED.contains(&k) => {}
                _ => d.params.push((k, v)),
            }
        }
        d.hosts = host_list(&hosts, &ports)?;
        if d.sslrootcert.is_some() && d.sslmode == SslMode::Require {
            // libpq: a root certificate given with `require` means verify-ca.
            d.sslmode = SslMode::VerifyCa;
        }
        Ok(d)
    }

    /// The roots file named by `sslrootcert` (`system` means the system store only).
    pub fn root_file(&self) -> Option<PathBuf> {
        self.sslrootcert
            .as_deref()
            .filter(|r| *r != "system")
            .map(PathBuf::from)
    }

    /// `host:port` list for logs and audit (never the user or password).
    pub fn describe_hosts(&self) -> String {
        let list: Vec<String> = self.hosts.iter().map(|h| h.to_string()).collect();
        list.join(",")
    }
}

/// Pairs `host`/`port` lists (comma-separated, as libpq) into the hosts to try.
fn host_list(hosts: &str, ports: &str) -> Result<Vec<HostPort>, DsnError> {
    let hosts: Vec<&str> = if hosts.is_empty() {
        vec!["localhost"]
    } else {
        hosts.split(',').collect()
    };
    let ports: Vec<&str> = if ports.is_empty() {
        Vec::new()
    } else {
        ports.split(',').collect()
    };
    if ports.len() > 1 && ports.len() != hosts.len() {
        return Err(DsnError::Syntax(
            "the port list does not match the host list",
        ));
    }
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let h = h.trim();
        if h.starts_with('/') || h.starts_with('@') {
            return Err(DsnError::UnixSocket);
        }
        let p = ports.get(i).or(ports.first()).map(|p| p.trim());
        let port = match p {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| DsnError::BadValue("port"))?,
        };
        let host = if h.is_empty() { "localhost" } else { h };
        out.push(HostPort {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        });
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, DsnError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| DsnError::Syntax("percent-encoding is not valid UTF-8"))
}

/// `[user[:password]@][host[:port][,...]][/dbname][?k=v&...]` (after the scheme).
fn url_pairs(rest: &str) -> Result<Vec<(String, String)>, DsnError> {
    // The user information ends at the first '/' or '?', as libpq reads it. An '@' after that
    // point almost always means a password with an unencoded '/' or '?': refusing it keeps the
    // rest of the password out of the database name (which errors quote) and the parameters.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') {
        return Err(DsnError::Syntax(
            "'@' after the host part (percent-encode '/', '?' and '@' in the user name and password)",
        ));
    }
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            pairs.push(("user".to_string(), decode(user)?));
            if let Some(p) = pass {
                pairs.push(("password".to_string(), decode(p)?));
            }
            hostspec
        }
        None => authority,
    };
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for hp in hostspec.split(',').filter(|s| !s.is_empty()) {
        let (h, p) = split_host_port(hp)?;
        hosts.push(decode(h)?);
        ports.push(p.to_string());
    }
    if !hosts.is_empty() {
        pairs.push(("host".to_string(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), ports.join(",")));
        }
    }
    if !path.is_empty() {
        pairs.push(("dbname".to_string(), decode(path)?));
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or(DsnError::Syntax("a query parameter has no '='"))?;
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok(pairs)
}

fn split_host_port(hp: &str) -> Result<(&str, &str), DsnError> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or(DsnError::Syntax("unterminated IPv6 address"))?;
        return Ok((h, after.strip_prefix(':').unwrap_or(after)));
    }
    Ok(hp.split_once(':').unwrap_or((hp, "")))
}

/// `k=v k2='quoted \' value'`: whitespace-separated, values optionally single-quoted with
/// backslash escapes.
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, DsnError> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(DsnError::Syntax("expected key=value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(DsnError::Syntax("unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.push(
                        chars
                            .next()
                            .ok_or(DsnError::Syntax("unterminated quoted value"))?,
                    ),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form() {
        let d = Dsn::parse(
            "postgres://app%40x:p%3Ass@db.internal:6543/app%20db?sslmode=verify-full&application_name=iron",
        )
        .unwrap();
        assert_eq!(d.user.as_deref(), Some("app@x"));
        assert_eq!(d.password.as_ref().unwrap().expose(), "p:ss");
        assert_eq!(
            d.hosts,
            vec![HostPort {
                host: "db.internal".into(),
                port: 6543
            }]
        );
        assert_eq!(d.dbname.as_deref(), Some("app db"));
        assert_eq!(d.sslmode, SslMode::VerifyFull);
        assert_eq!(d.params, vec![("application_name".into(), "iron".into())]);
        assert!(!format!("{d:?}").contains("p:ss"));
    }

    #[test]
    fn url_multi_host_and_ipv6() {
        let d = Dsn::parse("postgresql://u@[::1]:5433,10.0.0.2/db").unwrap();
        assert_eq!(
            d.hosts[0],
            HostPort {
                host: "::1".into(),
                port: 5433
            }
        );
        assert_eq!(
            d.hosts[1],
            HostPort {
                host: "10.0.0.2".into(),
                port: 5432
            }
        );
        assert_eq!(d.describe_hosts(), "[::1]:5433,10.0.0.2:5432");
        let d = Dsn::parse("postgres://").unwrap();
        assert_eq!(d.hosts[0].host, "localhost");
        assert_eq!(d.dbname, None);
    }

    #[test]
    fn keyword_form() {
        let d = Dsn::parse(
            "host=db port = 5433 dbname=app user=u password='it''s \\' x' sslmode=require sslrootcert=/ca.pem",
        );
        // libpq has no '' escape inside quotes: the first quote ends the value.
        assert!(d.is_err());
        let d = Dsn::parse(
            "host=db port = 5433 dbname=app user=u password='a \\'b\\\\' sslmode=require sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(d.password.as_ref().unwrap().expose(), "a 'b\\");
        assert_eq!(d.sslmode, SslMode::VerifyCa);
        assert_eq!(d.root_file(), Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            d.hosts[0],
            HostPort {
                host: "db".into(),
                port: 5433
            }
        );
    }

    #[test]
    fn refusals_name_keywords_never_values() {
        let e = Dsn::parse("host=x sslcert=/secret/path").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid DSN: sslcert is not supported by the proxy"
        );
        let e = Dsn::parse("host=x sslmode=bogus").unwrap_err();
        assert!(e.to_string().contains("sslmode"));
        assert_eq!(
            Dsn::parse("host=/var/run/postgresql").unwrap_err(),
            DsnError::UnixSocket
        );
        let e = Dsn::parse("password=hunter2 host").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    /// A password with an unencoded '/' or '?' (or a bad value anywhere) must not reach the
    /// error text, whole or in part: errors end up in the log and the audit record.
    #[test]
    fn errors_quote_no_fragment_of_a_password() {
        let password = "Xq9/Zk7?Wm4@Jv2:Rt8";
        for dsn in [
            "postgres://u:Ab1/Cd2@h/db".to_string(),
            "postgres://u:5432/Cd2@h/db".to_string(),
            "postgres://u:Ab1?Cd2@h/db".to_string(),
            "postgres://u:Ab1?c=Cd2@h/db".to_string(),
            "postgres://u:Ab1@Cd2/Ef3@h/db".to_string(),
            format!("postgres://u:{password}@h/db"),
            format!("postgresql://u:{password}@h:5432/db?sslmode=verify-full"),
            "postgres://u@h:Ab1/db".to_string(),
            "host=h port=Ab1".to_string(),
            "host=h sslmode=Ab1".to_string(),
            format!("host=h port={password}"),
        ] {
            let e = Dsn::parse(&dsn).expect_err(&dsn).to_string();
            for f in ["Xq9", "Zk7", "Wm4", "Jv2", "Rt8", "Ab1", "Cd2", "Ef3"] {
                assert!(!e.contains(f), "{dsn}: {e}");
            }
        }
        assert_eq!(
            Dsn::parse("postgres://u:ab/cd@h/db").unwrap_err(),
            DsnError::Syntax(
                "'@' after the host part (percent-encode '/', '?' and '@' in the user name and password)"
            )
        );
        assert_eq!(
            Dsn::parse("host=h port=Ab1").unwrap_err().to_string(),
            "invalid DSN: invalid value for port"
        );
        // Encoded, the same password is fine.
        let d = Dsn::parse("postgres://u:ab%2Fcd@h/db").unwrap();
        assert_eq!(d.password.as_ref().unwrap().expose(), "ab/cd");
        assert_eq!(d.dbname.as_deref(), Some("db"));
    }
}
