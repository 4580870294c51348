//! Static `dns.records`, keyed by normalised name (lower-case, no trailing dot, IDNs in punycode).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

use crate::config::{DnsRecord, DnsRecordType};

use super::glob::normalize;

/// What a static name answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticEntry {
    /// Every `A` record configured for the name, in config order.
    A(Vec<Ipv4Addr>),
    /// The CNAME target, fully qualified.
    Cname(Name),
}

#[derive(Debug, Default)]
pub struct StaticRecords {
    by_name: HashMap<String, StaticEntry>,
}

impl StaticRecords {
    /// Builds the table. Unusable records are logged and skipped rather than failing startup,
    /// because config validation owns rejecting them; this keeps the server answering.
    pub fn new(records: &[DnsRecord]) -> Self {
        let mut by_name: HashMap<String, StaticEntry> = HashMap::new();
        for rec in records {
            let key = config_name_key(&rec.name);
            match rec.kind {
                DnsRecordType::A => {
                    let Ok(ip) = rec.value.trim().parse::<Ipv4Addr>() else {
                        tracing::warn!(name = %rec.name, value = %rec.value, "dns static A record value is not an IPv4 address; ignored");
                        continue;
                    };
                    match by_name
                        .entry(key)
                        .or_insert_with(|| StaticEntry::A(Vec::new()))
                    {
                        StaticEntry::A(ips) => ips.push(ip),
                        StaticEntry::Cname(_) => {
                            tracing::warn!(name = %rec.name, "dns static A record for a name that has a CNAME; the CNAME wins");
                        }
                    }
                }
                DnsRecordType::Cname => {
                    let target = match parse_name(rec.value.trim()) {
                        Ok(mut n) if !n.is_root() => {
                            n.set_fqdn(true);
                            n
                        }
                        _ => {
                            tracing::warn!(name = %rec.name, value = %rec.value, "dns static CNAME target is not a valid name; ignored");
                            continue;
                        }
                    };
                    match by_name.get(&key) {
                        Some(StaticEntry::Cname(_)) => {
                            tracing::warn!(name = %rec.name, "dns static CNAME defined twice; the first wins");
                        }
                        Some(StaticEntry::A(_)) => {
                            // A name with a CNAME can have no other data (RFC 1034 §3.6.2).
                            tracing::warn!(name = %rec.name, "dns static CNAME for a name that has A records; the CNAME wins");
                            by_name.insert(key, StaticEntry::Cname(target));
                        }
                        None => {
                            by_name.insert(key, StaticEntry::Cname(target));
                        }
                    }
                }
            }
        }
        Self { by_name }
    }

    /// Looks up a key produced by [`name_key`] or [`config_name_key`].
    pub fn get(&self, key: &str) -> Option<&StaticEntry> {
        self.by_name.get(key)
    }
}

/// ASCII names keep their casing (answers echo what was configured); IDNs become punycode.
fn parse_name(s: &str) -> Result<Name, hickory_proto::ProtoError> {
    if s.is_ascii() {
        Name::from_ascii(s)
    } else {
        Name::from_utf8(s)
    }
}

/// The lookup key of a wire-format name.
pub fn name_key(name: &Name) -> String {
    normalize(&name.to_ascii())
}

/// The lookup key of a configured name; IDNs are converted to punycode so they meet the wire form.
pub fn config_name_key(name: &str) -> String {
    match parse_name(name.trim()) {
        Ok(n) => name_key(&n),
        Err(_) => normalize(name.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, kind: DnsRecordType, value: &str) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            kind,
            value: value.into(),
        }
    }

    #[test]
    fn keys_are_case_and_dot_insensitive() {
        let t = StaticRecords::new(&[
            rec("Custom.Local.", DnsRecordType::A, "10.0.0.5"),
            rec("custom.local", DnsRecordType::A, "10.0.0.6"),
            rec("alias.local", DnsRecordType::Cname, "Custom.Local"),
        ]);
        let ips = vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)];
        assert_eq!(t.get("custom.local"), Some(&StaticEntry::A(ips)));
        let q = Name::from_ascii("CUSTOM.local.").unwrap();
        assert!(t.get(&name_key(&q)).is_some());
        match t.get("alias.local") {
            Some(StaticEntry::Cname(n)) => assert_eq!(n.to_ascii(), "Custom.Local."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_values_are_skipped_and_cname_wins() {
        let t = StaticRecords::new(&[
            rec("bad.local", DnsRecordType::A, "not-an-ip"),
            rec("v6.local", DnsRecordType::A, "::1"),
            rec("both.local", DnsRecordType::A, "10.0.0.1"),
            rec("both.local", DnsRecordType::Cname, "x.local"),
            rec("both.local", DnsRecordType::A, "10.0.0.2"),
        ]);
        assert!(t.get("bad.local").is_none());
        assert!(t.get("v6.local").is_none());
        assert!(matches!(t.get("both.local"), Some(StaticEntry::Cname(_))));
    }

    #[test]
    fn idn_names_meet_punycode() {
        assert_eq!(config_name_key("Bücher.example"), "xn--bcher-kva.example");
    }
}
