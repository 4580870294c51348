//! The relay (iron-proxy §21.3): after login, bytes flow both ways untouched except for the
//! statements the policy refuses.
//!
//! Client → upstream: messages are framed; `Query` and `Parse` are read whole and checked, every
//! other message (Bind, Execute, Sync, COPY data, ...) is forwarded byte for byte as it arrives,
//! without buffering it whole.
//!
//! A refused statement is not answered by the proxy directly: it is replaced by a *poison*, a
//! statement the server rejects with a syntax error naming a per-session marker, and that error
//! is swapped for the policy's ErrorResponse on the way back. The server therefore keeps the
//! exact protocol state a real error would leave: responses stay in order when the client
//! pipelines, an extended-protocol batch is discarded up to its Sync, a transaction block is
//! marked failed, and ReadyForQuery reports the true transaction status.

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
        Stats::add(&self.stats.refused, 1);
        (self.on_refusal)(refusal, text.as_deref().unwrap_or_default());
        let poison = format!("{}{}", self.marker, refusal as u8);
        if tag == b'Q' {
            out.extend_from_slice(&wire::query(&poison));
        } else if let Some(p) = wire::rewrite_parse(body, &poison) {
            out.extend_from_slice(&p);
        }
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
        let code = msg[at..].chars().next()?.to_digit(10)?;
        Refusal::from_code(u8::try_from(code).ok()?)
    }
}
