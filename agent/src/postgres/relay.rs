//! The relay (iron-proxy §21.3): after login, bytes flow both ways untouched except for the
//! statements the policy refuses.
//!
//! Client → upstream: messages are framed; `Query` and `Parse` are read whole and checked; a
//! fastpath `FunctionCall` is always refused (it names a function by OID with its arguments, no
//! SQL text: `set_config` with `'role'` would pass unseen) and dropped as it arrives; every
//! other message (Bind, Execute, Sync, COPY data, ...) is forwarded byte for byte as it arrives,
//! without buffering it whole.
//!
//! A refused statement is not answered by the proxy directly: it is replaced by a *poison*, a
//! statement the server rejects with a syntax error naming a per-session marker, and that error
//! is swapped for the policy's ErrorResponse on the way back. The server therefore keeps the
//! exact protocol state a real error would leave: responses stay in order when the client
//! pipelines, an extended-protocol batch is discarded up to its Sync, a transaction block is
//! marked failed, and ReadyForQuery reports the true transaction status. A `FunctionCall`'s
//! poison is a `Query`: the server answers both with ErrorResponse and ReadyForQuery.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sql::{Policy, Refusal};
use super::wire::{self, Severity, WireError};

/// `Query`/`Parse` messages larger than this are refused (the session is closed): the policy
/// must see a statement whole.
const MAX_STATEMENT: usize = 16 << 20;
/// ErrorResponses are read whole to look for the marker; larger ones pass untouched.
const MAX_ERROR: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// Traffic counters of one session.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_from_client: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub statements: AtomicU64,
    pub refused: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The per-session pieces the relay needs.
pub struct Relay<'a> {
    pub policy: &'a Policy,
    /// `iron_proxy_refused_<random hex>_`: a refusal's poison is this plus its code.
    pub marker: String,
    pub stats: &'a Stats,
    /// Called for every refused statement (text as sent) before it is replaced.
    pub on_refusal: &'a (dyn Fn(Refusal, &str) + Send + Sync),
}

impl Relay<'_> {
    /// Relays until either side closes. Returns when the session is over.
    pub async fn run<C, U>(&self, client: C, upstream: U) -> Result<(), WireError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let (cr, cw) = tokio::io::split(client);
        let (ur, uw) = tokio::io::split(upstream);
        self.both_ways(cr, cw, ur, uw).await
    }

    /// [`Self::run`] for two plain TCP streams: their borrowed halves need no lock, unlike
    /// `tokio::io::split`'s, which every read and write of a round trip would take.
    pub async fn run_tcp(
        &self,
        mut client: TcpStream,
        mut upstream: TcpStream,
    ) -> Result<(), WireError> {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        self.both_ways(cr, cw, ur, uw).await
    }

    async fn both_ways<CR, CW, UR, UW>(
        &self,
        cr: CR,
        cw: CW,
        ur: UR,
        uw: UW,
    ) -> Result<(), WireError>
    where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
        UR: AsyncRead + Unpin,
        UW: AsyncWrite + Unpin,
    {
        tokio::select! {
            r = self.client_to_upstream(cr, uw) => r,
            r = self.upstream_to_client(ur, cw) => r,
        }
    }

    async fn client_to_upstream<R, W>(&self, mut r: R, mut w: W) -> Result<(), WireError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = BytesMut::with_capacity(READ_CHUNK);
        let mut passing = 0usize;
        // Bytes of a refused FunctionCall still to drop.
        let mut dropping = 0usize;
        loop {
            buf.reserve(READ_CHUNK);
            let n = r.read_buf(&mut buf).await?;
            if n == 0 {
                let _ = w.shutdown().await;
                return Ok(());
            }
            Stats::add(&self.stats.bytes_from_client, n);
            loop {
                if passing > 0 {
                    let take = passing.min(buf.len());
                    out.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    passing -= take;
                    if passing > 0 {
                        break;
                    }
                }
                if dropping > 0 {
                    let take = dropping.min(buf.len());
                    buf.advance(take);
                    dropping -= take;
                    if dropping > 0 {
                        break;
                    }
                }
                let Some(len) = wire::frame_len(&buf) else {
                    break;
                };
                let len = len?;
                let tag = buf[0];
                if tag == b'Q' || tag == b'P' {
                    if len > MAX_STATEMENT {
                        return Err(WireError::Protocol(
                            "statement too large for the proxy".into(),
                        ));
                    }
                    if buf.len() < len {
                        buf.reserve(len - buf.len());
                        break;
                    }
                    let msg = buf.split_to(len);
                    self.statement(tag, &msg, &mut out);
                } else if tag == b'F' {
                    Stats::add(&self.stats.statements, 1);
                    self.refuse(Refusal::FunctionCall, "", &mut out);
                    dropping = len;
                } else {
                    passing = len;
                }
            }
            if !out.is_empty() {
                w.write_all(&out).await?;
                out.clear();
            }
        }
    }

    /// Forwards a Query/Parse, or its poison when the policy refuses it.
    fn statement(&self, tag: u8, msg: &[u8], out: &mut BytesMut) {
        Stats::add(&self.stats.statements, 1);
        let body = &msg[5..];
        let text = wire::query_text(tag, body);
        let refusal = text.as_deref().and_then(|t| self.policy.check(t));
        let Some(refusal) = refusal else {
            out.extend_from_slice(msg);
            return;
        };
        if tag == b'Q' {
            self.refuse(refusal, text.as_deref().unwrap_or_default(), out);
            return;
        }
        Stats::add(&self.stats.refused, 1);
        (self.on_refusal)(refusal, text.as_deref().unwrap_or_default());
        if let Some(p) = wire::rewrite_parse(body, &self.poison(refusal)) {
            out.extend_from_slice(&p);
        }
    }

    /// Counts, audits and sends a refusal's poison as a simple Query (in place of a `Query` or
    /// `FunctionCall`; `text` is empty for the latter).
    fn refuse(&self, refusal: Refusal, text: &str, out: &mut BytesMut) {
        Stats::add(&self.stats.refused, 1);
        (self.on_refusal)(refusal, text);
        out.extend_from_slice(&wire::query(&self.poison(refusal)));
    }

    fn poison(&self, refusal: Refusal) -> String {
        format!("{}{}", self.marker, refusal as u8)
    }

    async fn upstream_to_client<R, W>(&self, mut r: R, mut w: W) -> Result<(), WireError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = BytesMut::with_capacity(READ_CHUNK);
        let mut passing = 0usize;
        loop {
            buf.reserve(READ_CHUNK);
            let n = r.read_buf(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            loop {
                if passing > 0 {
                    let take = passing.min(buf.len());
                    out.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    passing -= take;
                    if passing > 0 {
                        break;
                    }
                }
                let Some(len) = wire::frame_len(&buf) else {
                    break;
                };
                let len = len?;
                if buf[0] == b'E' && len <= MAX_ERROR {
                    if buf.len() < len {
                        break;
                    }
                    let msg = buf.split_to(len);
                    match self.refusal_in(&msg[5..]) {
                        Some(r) => wire::error_response(
                            &mut out,
                            Severity::Error,
                            r.sqlstate(),
                            &r.message(),
                        ),
                        None => out.extend_from_slice(&msg),
                    }
                } else {
                    passing = len;
                }
            }
            if !out.is_empty() {
                Stats::add(&self.stats.bytes_to_client, out.len());
                w.write_all(&out).await?;
                out.clear();
            }
        }
    }

    /// The refusal whose poison caused this server error, if it is one.
    fn refusal_in(&self, error_body: &[u8]) -> Option<Refusal> {
        let fields = wire::error_fields(error_body);
        let msg = fields.iter().find(|(t, _)| *t == b'M').map(|(_, m)| m)?;
        let at = msg.find(&self.marker)? + self.marker.len();
        let digits = msg[at..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(msg.len() - at);
        Refusal::from_code(msg[at..at + digits].parse().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use parking_lot::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// A FunctionCall for `set_config` (OID 2078) with `('role', <filler>, false)`.
    fn function_call(filler: usize) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i32(2078);
        body.put_i16(0); // argument formats: all text
        body.put_i16(3);
        let filler = vec![b'a'; filler];
        for arg in [&b"role"[..], &filler[..], &b"false"[..]] {
            body.put_i32(arg.len() as i32);
            body.put_slice(arg);
        }
        body.put_i16(0);
        let mut msg = BytesMut::new();
        msg.put_u8(b'F');
        msg.put_i32(body.len() as i32 + 4);
        msg.put_slice(&body);
        msg
    }

    async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut head = [0u8; 5];
        r.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut msg = head.to_vec();
        msg.resize(len + 1, 0);
        r.read_exact(&mut msg[5..]).await.unwrap();
        msg
    }

    /// A FunctionCall never reaches the server: it becomes a poison Query (even when it
    /// arrives over several reads), the server's error comes back as the policy's, and the
    /// next message passes untouched.
    #[tokio::test]
    async fn function_calls_are_refused() {
        let policy = Policy::new([]);
        let stats = Stats::default();
        let seen = Mutex::new(Vec::new());
        let on_refusal = |r: Refusal, sql: &str| seen.lock().push((r, sql.to_string()));
        let marker = "iron_proxy_refused_00ff_".to_string();
        let relay = Relay {
            policy: &policy,
            marker: marker.clone(),
            stats: &stats,
            on_refusal: &on_refusal,
        };
        let (client, mut client_peer) = duplex(1 << 16);
        let (upstream, mut server) = duplex(1 << 16);
        let driver = async {
            let mut sent = function_call(3 * READ_CHUNK).to_vec();
            sent.extend_from_slice(&wire::query("SELECT 1"));
            client_peer.write_all(&sent).await.unwrap();
            let poison = read_frame(&mut server).await;
            assert_eq!(poison, wire::query(&format!("{marker}10")).to_vec());
            assert_eq!(
                read_frame(&mut server).await,
                wire::query("SELECT 1").to_vec()
            );
            let mut reply = BytesMut::new();
            let text = format!("syntax error at or near \"{marker}10\"");
            wire::error_response(&mut reply, Severity::Error, "42601", &text);
            wire::ready_for_query(&mut reply, b'I');
            server.write_all(&reply).await.unwrap();
            let error = read_frame(&mut client_peer).await;
            let fields = wire::error_fields(&error[5..]);
            assert!(fields.contains(&(b'C', "0A000".to_string())), "{fields:?}");
            let message = Refusal::FunctionCall.message();
            assert!(fields.contains(&(b'M', message)), "{fields:?}");
            assert_eq!(read_frame(&mut client_peer).await[0], b'Z');
            drop(client_peer);
        };
        let (result, ()) = tokio::join!(relay.run(client, upstream), driver);
        result.unwrap();
        assert_eq!(*seen.lock(), vec![(Refusal::FunctionCall, String::new())]);
        assert_eq!(Stats::get(&stats.refused), 1);
        assert_eq!(Stats::get(&stats.statements), 2);
    }
}
