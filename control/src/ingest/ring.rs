//! The ring of recent audit events: bounded (the oldest event goes when a new one arrives at
//! capacity), newest first on query, filtered by tags, host, action, proxy and time.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// One audit record as received, attributed to the proxy that sent it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Assigned on arrival, increasing: a stable id within this process.
    pub seq: u64,
    /// When the request started (the record's timestamp), ms since the epoch.
    pub time_ms: i64,
    pub received_ms: i64,
    pub proxy_id: String,
    /// The proxy's tags in the control plane's database when the record arrived.
    pub tags: Vec<String>,
    pub host: String,
    pub method: String,
    pub path: String,
    pub action: String,
    pub status_code: Option<i64>,
    pub severity: String,
    /// Every attribute of the record (the agent's audit record, flat), as JSON.
    pub attributes: Map<String, Value>,
}

impl AuditEvent {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.seq,
            "time": rfc3339_ms(self.time_ms),
            "received_at": rfc3339_ms(self.received_ms),
            "proxy_id": self.proxy_id,
            "tags": self.tags,
            "host": self.host,
            "method": self.method,
            "path": self.path,
            "action": self.action,
            "status_code": self.status_code,
            "severity": self.severity,
            "attributes": self.attributes,
        })
    }
}

/// RFC 3339 UTC with milliseconds.
fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&fmt).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// What `GET /api/v1/audit` selects; every given criterion must hold.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// The proxy had all of these tags.
    pub tags: Vec<String>,
    /// Case-insensitive; `host` also matches a record's `host:port`.
    pub host: Option<String>,
    pub action: Option<String>,
    pub proxy_id: Option<String>,
    /// Records whose request started at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
}

impl Filter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.tags.iter().all(|t| e.tags.contains(t))
            && self
                .host
                .as_deref()
                .is_none_or(|h| host_matches(&e.host, h))
            && self.action.as_deref().is_none_or(|a| e.action == a)
            && self.proxy_id.as_deref().is_none_or(|p| e.proxy_id == p)
            && self.since_ms.is_none_or(|s| e.time_ms >= s)
    }
}

fn host_matches(record: &str, wanted: &str) -> bool {
    let bare = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
    let wanted = bare(wanted);
    if bare(record) == wanted {
        return true;
    }
    // `host:port` (not an IPv6 literal without brackets).
    match record.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') || h.ends_with(']') => {
            port.bytes().all(|b| b.is_ascii_digit()) && bare(h) == wanted
        }
        _ => false,
    }
}

struct Inner {
    events: VecDeque<AuditEvent>,
    next_seq: u64,
}

pub struct Ring {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(1 << 16)),
                next_seq: 1,
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the deque half-updated: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `events` (their `seq` is assigned here), evicting the oldest beyond capacity.
    pub fn push_all(&self, events: Vec<AuditEvent>) {
        let mut g = self.lock();
        for mut e in events {
            e.seq = g.next_seq;
            g.next_seq += 1;
            if g.events.len() == self.capacity {
                g.events.pop_front();
            }
            g.events.push_back(e);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Matching events, newest first: `(total matching, the page at offset..offset+limit)`.
    pub fn query(&self, f: &Filter, offset: usize, limit: usize) -> (usize, Vec<AuditEvent>) {
        let g = self.lock();
        let mut total = 0;
        let mut page = Vec::new();
        for e in g.events.iter().rev().filter(|e| f.matches(e)) {
            if total >= offset && page.len() < limit {
                page.push(e.clone());
            }
            total += 1;
        }
        (total, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(host: &str, action: &str, tags: &[&str], t: i64) -> AuditEvent {
        AuditEvent {
            seq: 0,
            time_ms: t,
            received_ms: t,
            proxy_id: "prx_1".into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            host: host.into(),
            method: "GET".into(),
            path: "/".into(),
            action: action.into(),
            status_code: Some(200),
            severity: "INFO".into(),
            attributes: Map::new(),
        }
    }

    #[test]
    fn bounded_and_newest_first() {
        let r = Ring::new(3);
        r.push_all(
            (0..5)
                .map(|i| ev(&format!("h{i}"), "allow", &[], i))
                .collect(),
        );
        assert_eq!(r.len(), 3);
        let (total, page) = r.query(&Filter::default(), 0, 10);
        assert_eq!(total, 3);
        let hosts: Vec<_> = page.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["h4", "h3", "h2"]);
        assert_eq!(page[0].seq, 5);
        let (_, second) = r.query(&Filter::default(), 1, 1);
        assert_eq!(second[0].host, "h3");
    }

    #[test]
    fn filters_combine() {
        let r = Ring::new(10);
        r.push_all(vec![
            ev("api.example.com:443", "allow", &["env:prod", "svc:a"], 10),
            ev("api.example.com", "reject", &["env:prod"], 20),
            ev("other.example", "reject", &["env:dev"], 30),
        ]);
        let q = |f: Filter| {
            r.query(&f, 0, 10)
                .1
                .into_iter()
                .map(|e| e.time_ms)
                .collect::<Vec<_>>()
        };
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            q(Filter {
                tags: tags(&["env:prod"]),
                ..Filter::default()
            }),
            [20, 10]
        );
        assert_eq!(
            q(Filter {
                tags: tags(&["env:prod", "svc:a"]),
                ..Filter::default()
            }),
            [10]
        );
        assert_eq!(
            q(Filter {
                host: Some("API.example.com".into()),
                ..Filter::default()
            }),
            [20, 10]
        );
        assert_eq!(
            q(Filter {
                action: Some("reject".into()),
                ..Filter::default()
            }),
            [30, 20]
        );
        assert_eq!(
            q(Filter {
                since_ms: Some(20),
                ..Filter::default()
            }),
            [30, 20]
        );
        assert!(
            q(Filter {
                host: Some("api.example".into()),
                ..Filter::default()
            })
            .is_empty()
        );
        assert!(host_matches("[::1]:8080", "[::1]"));
        assert!(!host_matches("::1", ":1"));
    }
}
