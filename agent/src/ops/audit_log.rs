//! Reading an audit log: the agent's JSON lines, `msg: request` records only (operational
//! lines and anything that is not JSON are counted and skipped).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::OpsError;

/// The fields of an audit record the operator tools use (docs/audit-log.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditLine {
    pub time: String,
    pub msg: String,
    pub host: String,
    pub method: String,
    pub path: String,
    pub action: String,
    pub status_code: u16,
    pub request_transforms: Vec<TraceLine>,
    pub rejected_by: Option<String>,
    pub reason: Option<String>,
    pub remote_addr: String,
    pub sni: String,
    pub mode: String,
    pub protocol: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub policy: Option<String>,
    pub orig_dst: Option<String>,
    pub postgres: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TraceLine {
    pub name: String,
    pub action: String,
    pub annotations: serde_json::Map<String, Value>,
}

/// The records of a log, and how many lines were not records.
#[derive(Debug, Default)]
pub struct AuditLog {
    pub records: Vec<AuditLine>,
    pub skipped_lines: usize,
}

impl AuditLog {
    pub fn read(path: &Path) -> Result<Self, OpsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| OpsError::Input(format!("reading {}: {e}", path.display())))?;
        Ok(Self::parse(&text))
    }

    /// As [`Self::read`], but a line that is a request record yet not a valid one (a field of
    /// the wrong type, no `action`) is an error naming the line; other lines are skipped.
    pub fn read_strict(path: &Path) -> Result<Self, OpsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| OpsError::Input(format!("reading {}: {e}", path.display())))?;
        Self::parse_strict(&text)
            .map_err(|(n, e)| OpsError::Input(format!("{}:{n}: {e}", path.display())))
    }

    pub fn parse_strict(text: &str) -> Result<Self, (usize, String)> {
        let mut log = AuditLog::default();
        for (i, line) in text.lines().enumerate() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                log.skipped_lines += usize::from(!line.trim().is_empty());
                continue;
            };
            if v.get("msg").and_then(Value::as_str) != Some("request") {
                log.skipped_lines += 1;
                continue;
            }
            if v.get("action").and_then(Value::as_str).is_none() {
                return Err((i + 1, "audit record without an `action`".into()));
            }
            let r = serde_path_to_error::deserialize::<_, AuditLine>(v).map_err(|e| {
                let why = format!("not a valid audit record: `{}`: {}", e.path(), e.inner());
                (i + 1, why)
            })?;
            log.records.push(r);
        }
        Ok(log)
    }

    pub fn parse(text: &str) -> Self {
        let mut log = AuditLog::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<AuditLine>(line) {
                Ok(r) if r.msg == "request" => log.records.push(r),
                _ => log.skipped_lines += 1,
            }
        }
        log
    }
}

impl AuditLine {
    /// Who made the request: `user`, else `uid:N`, else `-` (no eBPF identity).
    pub fn identity(&self) -> String {
        match (&self.user, self.uid) {
            (Some(u), _) => u.clone(),
            (None, Some(n)) => format!("uid:{n}"),
            (None, None) => "-".into(),
        }
    }

    /// Secret and credential names the request's transforms injected or swapped in.
    pub fn credentials(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.request_transforms {
            for (k, v) in &t.annotations {
                if k == "injected" || k == "swapped" {
                    super::policy_test::collect_names(v, &mut out);
                }
            }
        }
        out
    }
}

/// A sortable key for RFC 3339 UTC times whose fractional seconds vary in length.
pub fn time_key(t: &str) -> (String, String) {
    let (secs, frac) = match t.split_once('.') {
        Some((s, f)) => (s.to_string(), f.trim_end_matches('Z').to_string()),
        None => (t.trim_end_matches('Z').to_string(), String::new()),
    };
    (secs, format!("{frac:0<9}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_request_records_are_read() {
        let log = AuditLog::parse(concat!(
            "{\"msg\":\"listening\",\"addr\":\"127.0.0.1:1\"}\n",
            "not json\n",
            "{\"time\":\"t\",\"msg\":\"request\",\"host\":\"a.test\",\"method\":\"GET\",\"path\":\"/\",",
            "\"action\":\"allow\",\"request_transforms\":[{\"name\":\"secrets\",\"action\":\"allow\",",
            "\"annotations\":{\"injected\":[{\"secret\":\"GH_TOKEN\",\"locations\":[\"header:Authorization\"]}]}}],",
            "\"user\":\"ci\"}\n",
        ));
        assert_eq!(log.records.len(), 1);
        assert_eq!(log.skipped_lines, 2);
        assert_eq!(log.records[0].identity(), "ci");
        assert_eq!(log.records[0].credentials(), ["GH_TOKEN"]);
    }

    #[test]
    fn strict_reading_names_the_bad_line() {
        let ok = "{\"msg\":\"listening\"}\nplain text\n{\"msg\":\"request\",\"action\":\"allow\",\"host\":\"a\"}\n";
        let log = AuditLog::parse_strict(ok).unwrap();
        assert_eq!((log.records.len(), log.skipped_lines), (1, 2));
        let bad = "{\"msg\":\"listening\"}\n{\"msg\":\"request\",\"action\":\"allow\",\"status_code\":\"x\"}\n";
        let (line, e) = AuditLog::parse_strict(bad).unwrap_err();
        assert_eq!(line, 2, "{e}");
        assert!(e.contains("`status_code`"), "{e}");
        let (line, _) = AuditLog::parse_strict("{\"msg\":\"request\"}").unwrap_err();
        assert_eq!(line, 1);
    }

    #[test]
    fn times_with_short_fractions_sort_right() {
        assert!(time_key("2026-07-01T09:30:12.48Z") < time_key("2026-07-01T09:30:12.481Z"));
        assert!(time_key("2026-07-01T09:30:12Z") < time_key("2026-07-01T09:30:12.000001Z"));
    }
}
