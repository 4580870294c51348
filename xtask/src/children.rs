//! Child processes that are killed when dropped, on error, and on Ctrl-C / SIGTERM.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Pids of live children, for the signal handler (which cannot reach the owning guards).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Scratch directories to remove if we are interrupted (normal exits remove them on drop).
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn remove_on_interrupt(dir: PathBuf) {
    if let Ok(mut v) = SCRATCH.lock() {
        v.push(dir);
    }
}

pub fn install_signal_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: stopping child processes");
        let pids = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
        for pid in &pids {
            signal(*pid, Signal::SIGTERM);
        }
        thread::sleep(Duration::from_millis(300));
        for pid in &pids {
            signal(*pid, Signal::SIGKILL);
        }
        for dir in SCRATCH.lock().map(|v| v.clone()).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Last lines of a child's stream, kept for error messages.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<Vec<String>>>);

impl Tail {
    const KEEP: usize = 40;

    fn push(&self, line: String) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() == Self::KEEP {
                v.remove(0);
            }
            v.push(line);
        }
    }

    pub fn text(&self) -> String {
        self.0.lock().map(|v| v.join("\n")).unwrap_or_default()
    }
}

/// A running child. Dropping it sends SIGTERM, waits briefly, then SIGKILLs.
pub struct Guard {
    name: String,
    child: Child,
    /// Lines from stdout, as they arrive.
    pub stdout_lines: Option<Receiver<String>>,
    /// Lines from stderr, as they arrive (also recorded in `stderr_tail`).
    pub stderr_lines: Option<Receiver<String>>,
    pub stderr_tail: Tail,
}

impl Guard {
    /// Spawns with piped stdout/stderr, each drained by a thread into a channel so the child never
    /// blocks on a full pipe.
    pub fn spawn(name: &str, cmd: Command) -> Result<Self> {
        Self::spawn_with_stderr(name, cmd, Stdio::piped())
    }

    /// As [`Guard::spawn`], with stderr sent to `stderr` (a log file: a chatty child would
    /// otherwise cost this process CPU to drain). `stderr_lines` is then `None`.
    pub fn spawn_with_stderr(name: &str, mut cmd: Command, stderr: Stdio) -> Result<Self> {
        let what = crate::cmd::describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name}: `{what}`"))?;
        if let Ok(mut live) = LIVE.lock() {
            live.push(child.id());
        }
        let stderr_tail = Tail::default();
        let stdout_lines = child.stdout.take().map(|s| pump(s, None));
        let stderr_lines = child
            .stderr
            .take()
            .map(|s| pump(s, Some(stderr_tail.clone())));
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_lines,
            stderr_lines,
            stderr_tail,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the first stdout line (the bins print their address there), bounded by `timeout`.
    pub fn first_stdout_line(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let rx = self.stdout_lines.take().context("stdout already taken")?;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    self.stdout_lines = Some(rx);
                    return Ok(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(50));
                    let status = self
                        .exited()
                        .map_or("running".to_owned(), |s| s.to_string());
                    bail!(
                        "{} closed stdout before starting ({status}); stderr:\n{}",
                        self.name,
                        self.stderr_tail.text()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not start within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr_tail.text()
                );
            }
        }
    }

    /// Waits for the child to exit, killing it if it runs past `timeout`.
    pub fn wait_bounded(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for child")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "{} ran past its {timeout:?} bound and was killed",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// All remaining stdout, once the child has exited (the pump thread then hits EOF).
    pub fn remaining_stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(rx) = self.stdout_lines.take() {
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(self.child.id(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Ok(mut live) = LIVE.lock() {
            let id = self.child.id();
            live.retain(|p| *p != id);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pump(stream: impl Read + Send + 'static, tail: Option<Tail>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tail) = &tail {
                tail.push(line.clone());
            }
            // The receiver may be gone (nobody reads stderr any more); keep draining regardless.
            let _ = tx.send(line);
        }
    });
    rx
}
