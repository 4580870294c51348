//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Not part of the
//! agent's API: each function hands one parser the bytes a hostile peer or config author
//! controls, the way the data path does, with an in-memory stream where the agent reads a
//! socket. None may panic, whatever the input; a returned error is the expected outcome.
//!
//! Stream inputs are cut into segments (see [`Segmented`]) so that reassembly across reads is
//! exercised as well as the parsers. Always compiled (not behind `cfg(fuzzing)`), so a change
//! that breaks a target breaks the ordinary build and the regression tests in `tests.rs`.

mod net;
mod parse;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use net::{client_hello, connect_head, http1_head, postgres_wire, socks5};
pub use parse::{config_yaml, dns_request, mcp_jsonrpc, sigv4_scope, template};

/// Largest segment one read returns.
const MAX_SEGMENT: usize = 512;
/// Bytes written back to the "client" that are kept (the rest is counted and dropped).
const MAX_KEPT_WRITES: usize = 64 * 1024;

/// Runs `f` to completion on one current-thread runtime shared by every input (building a
/// runtime per input would dominate the run). `None` only if the runtime cannot be built.
fn block_on<F: Future>(f: F) -> Option<F::Output> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
    });
    rt.as_ref().map(|rt| rt.block_on(f))
}

/// A peer that sends `data` in segments and then closes its side (EOF); what the agent writes
/// back is kept in `written`. The first input byte seeds the segment sizes: 0 sends everything
/// in one read, anything else cuts 1..=[`MAX_SEGMENT`]-byte pieces from a small LCG, so the
/// fuzzer controls where records, heads and frames are split.
pub struct Segmented {
    data: Vec<u8>,
    pos: usize,
    state: u32,
    /// Once `data` is sent: pending forever (a peer that stays connected) instead of EOF.
    hold_open: bool,
    pub written: Vec<u8>,
}

impl Segmented {
    pub fn new(input: &[u8]) -> Self {
        let (seed, data) = match input.split_first() {
            Some((s, rest)) => (*s, rest),
            None => (0, input),
        };
        Self {
            data: data.to_vec(),
            pos: 0,
            state: u32::from(seed),
            hold_open: false,
            written: Vec::new(),
        }
    }

    /// A peer that never closes: reads past the end of its data stay pending.
    pub fn held_open(mut self) -> Self {
        self.hold_open = true;
        self
    }

    fn next_len(&mut self) -> usize {
        if self.state == 0 {
            return usize::MAX;
        }
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (self.state >> 16) as usize % MAX_SEGMENT
    }
}

impl AsyncRead for Segmented {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.data.len() - self.pos;
        if left == 0 && self.hold_open {
            // Never woken: callers only hold it open next to a stream that does end.
            return Poll::Pending;
        }
        let n = self.next_len().min(left).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Segmented {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let room = MAX_KEPT_WRITES.saturating_sub(self.written.len());
        self.written.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
