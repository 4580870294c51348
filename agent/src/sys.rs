//! The few operating-system calls the agent makes beyond what std and tokio offer: the root
//! check, mounting bpffs, signalling processes, and dropping privileges in a jailed child. All
//! through `nix`'s safe wrappers; the one `unsafe` left is std's `pre_exec` hook itself.

use std::fs::File;
use std::path::Path;

pub use nix::sys::signal::Signal;
use nix::unistd::{Gid, Pid, Uid};

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The effective uid (the agent's own identity, exempted from redirection).
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `mount -t bpf bpf <target>`: a bpf filesystem for pinned programs and maps.
pub fn mount_bpffs(target: &Path) -> std::io::Result<()> {
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(std::io::Error::from)
}

/// `mount -t securityfs securityfs /sys/kernel/security`: where the active LSM list is read.
pub fn mount_securityfs() -> std::io::Result<()> {
    nix::mount::mount(
        Some("securityfs"),
        "/sys/kernel/security",
        Some("securityfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(std::io::Error::from)
}

/// Sends `sig` to process `pid`. A process that is already gone is not an error worth reporting
/// to the callers (they signal children that may have exited a moment ago).
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// The signal number as the shell reports it (`128 + n`).
pub fn signal_number(sig: Signal) -> i32 {
    sig as i32
}

/// Who a jailed child becomes: uid, primary gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Makes the child spawned from `cmd` write itself into the cgroup whose `cgroup.procs` is
/// `procs` (opened by the parent: the open-time credentials authorize the move) and then take on
/// `ident`, between fork and exec, so none of its instructions run outside the cgroup or with
/// our privileges.
#[allow(unsafe_code)]
pub fn join_cgroup_and_become(
    cmd: &mut tokio::process::Command,
    procs: File,
    ident: Option<Identity>,
) {
    // Converted before the fork: the child only makes system calls.
    let ident = ident.map(|i| {
        let groups: Vec<Gid> = i.groups.iter().copied().map(Gid::from_raw).collect();
        (Uid::from_raw(i.uid), Gid::from_raw(i.gid), groups)
    });
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (write, setgroups, setgid, setuid) on data prepared before the fork; it
    // allocates nothing except the error value on failure. `procs` moves into the closure, so
    // the descriptor stays open until the command (and with it the closure) is dropped.
    unsafe {
        cmd.pre_exec(move || {
            // "0" means "the writing process".
            if nix::unistd::write(&procs, b"0")? != 1 {
                return Err(std::io::Error::other("short write to cgroup.procs"));
            }
            if let Some((uid, gid, groups)) = &ident {
                // Groups, then gid, then uid: after setuid we could no longer change the others.
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(*gid)?;
                nix::unistd::setuid(*uid)?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_check_matches_proc() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .to_string();
        assert_eq!(is_root(), euid == "0");
    }

    #[test]
    fn signals_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        signal(child.id(), Signal::SIGTERM);
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(st.signal(), Some(signal_number(Signal::SIGTERM)));
    }

    #[test]
    fn mount_needs_a_directory() {
        // Whatever our privileges, mounting on a path that does not exist fails with a clear
        // OS error rather than panicking.
        let e = mount_bpffs(Path::new("/nonexistent/iron-agent-sys-test")).unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
