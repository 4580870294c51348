//! CPU time and peak memory of a process, from /proc.

use std::process::Command;

use anyhow::{Context, Result};

/// Clock ticks per second for /proc/<pid>/stat times.
pub fn clock_ticks_per_sec() -> u64 {
    // Always 100 on Linux/x86_64 in practice, but ask rather than assume.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// utime + stime of the whole process (all threads, including exited ones), in microseconds.
pub fn cpu_us(pid: u32, ticks_per_sec: u64) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(stat_ticks(&stat)? * 1_000_000 / ticks_per_sec)
}

/// utime + stime, in clock ticks, from the text of /proc/<pid>/stat.
fn stat_ticks(stat: &str) -> Result<u64> {
    // comm (field 2) may contain spaces and parentheses; everything after the last ')' is fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: index 0 is field 3 (state), so utime (field 14) is index 11, stime index 12.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("non-numeric /proc stat field")
    };
    Ok(tick(11)? + tick(12)?)
}

/// Peak resident set size (VmHWM) over the process's life, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_comm() {
        let stat =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(stat_ticks(stat).unwrap(), 325);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        cpu_us(pid, clock_ticks_per_sec()).unwrap();
        assert!(peak_rss_kib(pid).unwrap() > 0);
    }
}
