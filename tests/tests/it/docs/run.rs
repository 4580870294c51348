//! Runs a page's shell commands as the page writes them: through `sh -c` in a temporary working
//! directory, no proxy settings from the test's environment, and only the substitutions a test
//! names (a temp path for a fixed one, a bound port for the page's fixed port). `PATH` starts
//! with an empty directory standing for `/usr/local/bin`: `iron-agent` is found only once the
//! test ran getting-started.md's `sudo install` line ([`Shell::install_agent`]), as a reader's
//! shell and sudo find it only then. As root a leading `sudo` is dropped and `sudo -u U`
//! becomes `setpriv` to U (the machine has no sudo; the commands run as root either way).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iron_agent_tests::agent::{Finished, agent_bin, wait_finished};
use iron_testkit::LogLines;
use serde_json::Value;

use super::{Cover, SHELL, SHELL_PAGES, page, shell_commands};

pub(super) struct Shell {
    page: &'static str,
    test: &'static str,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    subst: Vec<(String, String)>,
    /// Stands for `/usr/local/bin`, first on `PATH`: empty until [`Shell::install_agent`].
    bin: tempfile::TempDir,
}

/// What getting-started.md's install line copies: the reader's release build.
const BUILT: &str = "target/release/iron-agent";
/// Where it copies it to, on sudo's `secure_path`.
const PREFIX: &str = "/usr/local/bin";

impl Shell {
    /// Commands of `page` run by test `test` (its function name) in `dir`.
    pub fn new(page: &'static str, test: &'static str, dir: &Path) -> Shell {
        let bin = tempfile::tempdir().unwrap();
        // Searched by the jailed command's user too.
        std::fs::set_permissions(
            bin.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Shell {
            bin,
            page,
            test,
            dir: dir.to_path_buf(),
            env: Vec::new(),
            subst: Vec::new(),
        }
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Shell {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Replace `from` by `to` in every command run from now on.
    pub fn subst(&mut self, from: &str, to: impl Into<String>) {
        self.subst.push((from.into(), to.into()));
    }

    /// `cmd` must be a command of `page` (and, on the pages of [`SHELL_PAGES`], listed in
    /// [`SHELL`] as run by this test).
    fn check_listed(&self, page_name: &str, cmd: &str) {
        assert!(
            shell_commands(&page(page_name)).iter().any(|c| c == cmd),
            "{page_name}: no command `{cmd}` (was the page changed?)"
        );
        if SHELL_PAGES.contains(&page_name) {
            let listed = SHELL.iter().any(|(p, c, cover)| {
                *p == page_name
                    && *c == cmd
                    && matches!(cover, Cover::Run(t) if t.contains(&self.test))
            });
            assert!(
                listed,
                "docs::SHELL does not say {} runs `{cmd}`",
                self.test
            );
        }
    }

    /// getting-started.md's line that puts `iron-agent` on `PATH` (`cmd`), run with the binary
    /// under test for the reader's release build and this shell's `PATH` directory for
    /// `/usr/local/bin`, without `sudo` (the directory is the test's own). Before it `iron-agent`
    /// is not found; after it, it is, and runs.
    pub fn install_agent(&self, cmd: &str) {
        self.check_listed("getting-started.md", cmd);
        assert!(
            cmd.contains(BUILT) && cmd.contains(PREFIX),
            "the install line changed: {cmd}"
        );
        let found = |s: &Shell| {
            let out = s.sh_command("command -v iron-agent".into(), true).output();
            out.unwrap().status.success()
        };
        assert!(
            !found(self),
            "iron-agent is on PATH before the install line"
        );
        let script = cmd
            .strip_prefix("sudo ")
            .unwrap_or(cmd)
            .replace(BUILT, &agent_bin().to_string_lossy())
            .replace(PREFIX, &self.bin.path().to_string_lossy());
        let out = self.sh_command(script, true).output().unwrap();
        assert!(out.status.success(), "`{cmd}`: {out:?}");
        assert!(found(self), "`{cmd}` did not put iron-agent on PATH");
        let version = self.sh_command("iron-agent version".into(), true).output();
        let version = String::from_utf8_lossy(&version.unwrap().stdout).into_owned();
        assert!(version.starts_with("iron-agent "), "{version}");
    }

    /// The command as run: `cmd` must be a command of the page (and, on the pages of
    /// [`SHELL_PAGES`], listed in [`SHELL`] as run by this test), then substituted.
    pub fn text(&self, cmd: &str) -> String {
        self.check_listed(self.page, cmd);
        let mut text = cmd.to_string();
        for (from, to) in &self.subst {
            text = text.replace(from, to);
        }
        if iron_agent_tests::netns::is_root() {
            text = unsudo(&text);
        }
        text
    }

    /// `sh -c CMD` (checked, substituted), bounded by `timeout` unless it is a server (`bounded` false).
    fn command(&self, cmd: &str, bounded: bool) -> Command {
        self.sh_command(self.text(cmd), bounded)
    }

    fn sh_command(&self, script: String, bounded: bool) -> Command {
        let mut c = Command::new(if bounded { "timeout" } else { "sh" });
        if bounded {
            c.args(["120", "sh"]);
        }
        c.arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.bin.path().display()
                ),
            )
            .env("HOME", &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `cmd` to completion.
    pub fn run(&self, cmd: &str) -> Finished {
        let child = self.command(cmd, true).spawn().unwrap();
        wait_finished(child, Duration::from_secs(130), cmd)
    }

    /// Runs the commands of one block in one shell (a variable one sets is seen by the next),
    /// stopping at the first that fails; all must succeed.
    pub fn ok_script(&self, cmds: &[&str]) {
        let script: Vec<String> = cmds.iter().map(|c| self.text(c)).collect();
        let whole = format!("set -e\n{}", script.join("\n"));
        let child = self.sh_command(whole, true).spawn().unwrap();
        let out = wait_finished(child, Duration::from_secs(130), "block");
        assert_eq!(out.code, 0, "{script:?}:\n{}\n{}", out.stdout, out.stderr);
    }

    /// Runs `cmd`, which must succeed; its stdout.
    pub fn ok(&self, cmd: &str) -> String {
        let out = self.run(cmd);
        assert_eq!(
            out.code, 0,
            "`{cmd}` failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Starts `cmd` (an agent) in its own process group and waits until it logged
    /// `iron-agent starting` (and `eBPF interception attached` when `attached`).
    pub fn spawn_agent(&self, cmd: &str, attached: bool) -> Running {
        let mut c = self.command(cmd, false);
        c.process_group(0);
        let mut child = c.spawn().unwrap();
        let lines = LogLines::capture(child.stderr.take().unwrap());
        let mut running = Running { child, lines };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let logs = running.lines.text();
            if logs.contains("iron-agent starting")
                && (!attached || logs.contains("eBPF interception attached"))
            {
                return running;
            }
            let exited = Instant::now() > deadline || running.exited();
            assert!(!exited, "`{cmd}` did not start:\n{logs}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `sudo -u U CMD` → `setpriv` to U; `sudo CMD` → `CMD` (we are root).
fn unsudo(text: &str) -> String {
    if let Some(rest) = text.strip_prefix("sudo -u ") {
        let (user, cmd) = rest.split_once(' ').unwrap();
        format!("setpriv --reuid={user} --regid={user} --clear-groups -- {cmd}")
    } else {
        text.strip_prefix("sudo ").unwrap_or(text).to_string()
    }
}

/// An agent started from a page's command; its process group is stopped on drop.
pub(super) struct Running {
    child: Child,
    pub lines: LogLines,
}

impl Running {
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The address the agent logged for `listener`.
    pub fn addr(&self, listener: &str) -> String {
        self.lines
            .json()
            .iter()
            .find(|v| v["msg"] == "listening" && v["listener"] == listener)
            .and_then(|v| v["addr"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no {listener} listener:\n{}", self.lines.text()))
    }

    /// Audit records whose `host` is `host`.
    pub fn audits(&self, host: &str) -> Vec<Value> {
        self.lines
            .json()
            .into_iter()
            .filter(|v| v["msg"] == "request" && v["host"] == host)
            .collect()
    }

    /// Waits (bounded) until `n` audit records for `host` exist; they must be exactly `n`.
    pub fn wait_audits(&self, host: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.audits(host).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A duplicate would be written right after the first.
        std::thread::sleep(Duration::from_millis(200));
        let found = self.audits(host);
        assert_eq!(
            found.len(),
            n,
            "audit records for {host}:\n{}",
            self.lines.text()
        );
        found
    }

    /// SIGTERM to the group, then waits for the agent to exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on the process group we created for our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // The shell and the agent it started: the group is gone when both are.
        // SAFETY: kill(2) with signal 0 only asks whether the group still exists.
        #[allow(unsafe_code)]
        let alive = |pgid: i32| unsafe { libc::kill(-pgid, 0) } == 0;
        let pgid = self.child.id() as i32;
        while self.child.try_wait().unwrap().is_none() || alive(pgid) {
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: as in `stop`.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}
