//! A child process's stderr, line by line, as it arrives: the binaries log JSON there.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;

/// The lines a process wrote to stderr so far (filled by a reader thread).
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>, Arc<Gate>);

/// Whether the reader thread is holding off (a stalled log reader, for tests of the writer).
#[derive(Default)]
struct Gate {
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl LogLines {
    /// Reads `stderr` on a thread until it closes.
    pub fn capture(stderr: ChildStderr) -> LogLines {
        let lines = LogLines::default();
        let (l, gate) = (lines.0.clone(), lines.1.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().expect("lines").push(line);
                let mut paused = gate.paused.lock().expect("gate");
                while *paused {
                    paused = gate.resumed.wait(paused).expect("gate");
                }
            }
        });
        lines
    }

    /// Stops reading after the current line: once the pipe is full the process's writes to
    /// stderr block, as with a log collector that stopped reading.
    pub fn pause(&self) {
        *self.1.paused.lock().expect("gate") = true;
    }

    /// Reads again (and catches up).
    pub fn resume(&self) {
        *self.1.paused.lock().expect("gate") = false;
        self.1.resumed.notify_all();
    }

    /// Everything so far, one line per line.
    pub fn text(&self) -> String {
        self.0.lock().expect("lines").join("\n")
    }

    /// The lines that are JSON objects, parsed.
    pub fn json(&self) -> Vec<Value> {
        self.0
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Spawns `cmd` with no input, stdout discarded and stderr captured.
pub fn spawn_logged(mut cmd: Command) -> (Child, LogLines) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    (child, LogLines::capture(stderr))
}
