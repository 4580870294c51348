//! `iron-agent run --summary FILE -- CMD`: the jail's agent copies every audit line (whatever
//! `log.level`) to a private file (`log.audit_copy`); when CMD is done, the job summary of that
//! run, as `iron-agent summary` prints it, is appended to FILE (`$GITHUB_STEP_SUMMARY` expects
//! appends).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{audit_log::AuditLog, summary};

/// The private copy of this run's audit lines; removed on drop.
pub struct AuditCopy {
    pub path: PathBuf,
}

impl AuditCopy {
    /// A name no earlier run used; the agent creates the file (`create_new`, mode 0600).
    pub fn fresh() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("iron-agent-run-{}-{nanos}.audit.jsonl", std::process::id());
        Self {
            path: std::env::temp_dir().join(name),
        }
    }

    /// Appends the summary of the copied records to `out`; `Ok(false)` when there is no copy
    /// (the agent never started, so CMD never ran).
    pub fn append_summary(&self, out: &Path) -> Result<bool, String> {
        if !self.path.exists() {
            return Ok(false);
        }
        let log = AuditLog::read(&self.path).map_err(|e| e.to_string())?;
        let text = summary::render_markdown(&summary::summarize(&log));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(out)
            .map_err(|e| format!("opening {}: {e}", out.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
        Ok(true)
    }
}

impl Drop for AuditCopy {
    fn drop(&mut self) {
        // Absent when the agent never started.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_appended_and_the_copy_removed() {
        let copy = AuditCopy::fresh();
        let out = copy.path.with_extension("md");
        std::fs::write(&out, "earlier step\n").unwrap();
        std::fs::write(
            &copy.path,
            "{\"time\":\"2026-07-01T09:30:12Z\",\"msg\":\"request\",\"host\":\"a.test\",\"method\":\"GET\",\"path\":\"/\",\"action\":\"reject\",\"rejected_by\":\"allowlist\"}\n",
        )
        .unwrap();
        assert!(copy.append_summary(&out).unwrap());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.starts_with("earlier step\n## Egress summary\n"),
            "{text}"
        );
        assert!(text.contains("1 requests: 0 allowed, 1 denied"), "{text}");
        std::fs::remove_file(&out).unwrap();
        let path = copy.path.clone();
        drop(copy);
        assert!(!path.exists());
        // No copy (the agent never started): nothing is written.
        assert!(!AuditCopy::fresh().append_summary(&out).unwrap());
        assert!(!out.exists());
    }
}
