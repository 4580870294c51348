//! The proxy's side of the PostgreSQL v3 wire protocol: reading what clients send (startup
//! packets, tagged frontend messages) and building the backend messages the proxy answers with
//! itself. Messages towards the upstream, and parsing the upstream's answers during login, use
//! the `postgres-protocol` crate (see `upstream`).

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Protocol 3.0 in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// Upper bound for a startup packet (PostgreSQL's own limit is 10000 bytes).
const MAX_STARTUP: usize = 10_000;
/// Upper bound for a message the proxy must read whole during the handshake.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

fn protocol(m: impl Into<String>) -> WireError {
    WireError::Protocol(m.into())
}

/// The first packet of a connection.
#[derive(Debug)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel,
    Message {
        version: i32,
        /// Parameters in the order sent (`user`, `database`, `options`, GUCs, `_pq_.*`).
        params: Vec<(String, String)>,
    },
}

impl Startup {
    pub fn param(params: &[(String, String)], name: &str) -> Option<String> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Reads one untagged startup-phase packet.
pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> Result<Startup, WireError> {
    let len = r.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (8..=MAX_STARTUP).contains(l))
        .ok_or_else(|| protocol("invalid startup packet length"))?;
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    match code {
        SSL_REQUEST => Ok(Startup::Ssl),
        GSSENC_REQUEST => Ok(Startup::GssEnc),
        CANCEL_REQUEST => Ok(Startup::Cancel),
        v if v >> 16 == 3 => Ok(Startup::Message {
            version: v,
            params: parse_params(&body[4..])?,
        }),
        v => Err(protocol(format!(
            "unsupported frontend protocol {}.{}",
            v >> 16,
            v & 0xffff
        ))),
    }
}

fn parse_params(mut b: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut out = Vec::new();
    loop {
        let key = take_cstr(&mut b)?;
        if key.is_empty() {
            return Ok(out);
        }
        let value = take_cstr(&mut b)?;
        out.push((key, value));
    }
}

/// Reads a NUL-terminated string and advances past it.
pub fn take_cstr(b: &mut &[u8]) -> Result<String, WireError> {
    let end = b
        .iter()
        .position(|c| *c == 0)
        .ok_or_else(|| protocol("unterminated string"))?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    *b = &b[end + 1..];
    Ok(s)
}

/// Reads one tagged message whole during the handshake: `(tag, body)`.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Vec<u8>), WireError> {
    let tag = r.read_u8().await?;
    let len = r.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_AUTH_MESSAGE).contains(l))
        .ok_or_else(|| protocol("invalid message length"))?;
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    Ok((tag, body))
}

/// Appends a tagged message with `body` written by `f`.
fn message(out: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    f(out);
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early; PostgreSQL never sends one either.
    out.put_slice(s.replace('\0', "").as_bytes());
    out.put_u8(0);
}

pub fn auth_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

pub fn auth_cleartext(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(3));
}

pub fn auth_sasl(out: &mut BytesMut, mechanism: &str) {
    message(out, b'R', |b| {
        b.put_i32(10);
        put_cstr(b, mechanism);
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, key: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(key);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version we speak and the options we ignore.
pub fn negotiate_protocol(out: &mut BytesMut, minor: i32, unsupported: &[String]) {
    message(out, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(i32::try_from(unsupported.len()).unwrap_or(i32::MAX));
        for o in unsupported {
            put_cstr(b, o);
        }
    });
}

/// Severity of a proxy-generated error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// An ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, msg: &str) {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    message(out, b'E', |b| {
        for (field, value) in [(b'S', sev), (b'V', sev), (b'C', code), (b'M', msg)] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// The fields of an ErrorResponse/NoticeResponse body, by field type.
pub fn error_fields(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while let Some((&t, rest)) = body.split_first() {
        if t == 0 {
            break;
        }
        body = rest;
        match take_cstr(&mut body) {
            Ok(v) => out.push((t, v)),
            Err(_) => break,
        }
    }
    out
}

/// Length of the message starting at `buf[0]` (tag included), once its header is in `buf`.
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, WireError>> {
    if buf.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Some(match usize::try_from(len) {
        Ok(l) if l >= 4 => Ok(l + 1),
        _ => Err(protocol("invalid message length")),
    })
}

/// The query text of a Query (`Q`) body, or of a Parse (`P`) body after the statement name.
/// Bytes that are not UTF-8 (a single-byte client encoding) become U+FFFD, which the parser,
/// like the server, reads as identifier characters: the statement's structure is unchanged.
pub fn query_text(tag: u8, body: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let mut b = body;
    if tag == b'P' {
        let end = b.iter().position(|c| *c == 0)?;
        b = &b[end + 1..];
    }
    let end = b.iter().position(|c| *c == 0)?;
    Some(String::from_utf8_lossy(&b[..end]))
}

/// A Parse message identical to `body`'s but with another query text (same name and types).
pub fn rewrite_parse(body: &[u8], query: &str) -> Option<Bytes> {
    let name_end = body.iter().position(|c| *c == 0)?;
    let q_end = name_end + 1 + body[name_end + 1..].iter().position(|c| *c == 0)?;
    let mut out = BytesMut::new();
    message(&mut out, b'P', |b| {
        b.put_slice(&body[..=name_end]);
        put_cstr(b, query);
        b.put_slice(&body[q_end + 1..]);
    });
    Some(out.freeze())
}

/// A simple Query message.
pub fn query(query: &str) -> Bytes {
    let mut out = BytesMut::new();
    message(&mut out, b'Q', |b| put_cstr(b, query));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips() {
        let mut b = BytesMut::new();
        error_response(
            &mut b,
            Severity::Fatal,
            "28P01",
            "password authentication failed",
        );
        assert_eq!(b[0], b'E');
        assert_eq!(frame_len(&b).unwrap().unwrap(), b.len());
        let f = error_fields(&b[5..]);
        assert_eq!(f[2], (b'C', "28P01".to_string()));
        assert_eq!(f[3].1, "password authentication failed");
    }

    #[test]
    fn parse_rewrite_keeps_name_and_types() {
        let mut b = BytesMut::new();
        message(&mut b, b'P', |m| {
            put_cstr(m, "s1");
            put_cstr(m, "SET ROLE x");
            m.put_i16(1);
            m.put_i32(25);
        });
        let body = &b[5..];
        assert_eq!(query_text(b'P', body).as_deref(), Some("SET ROLE x"));
        let r = rewrite_parse(body, "poison").unwrap();
        assert_eq!(frame_len(&r).unwrap().unwrap(), r.len());
        assert_eq!(query_text(b'P', &r[5..]).as_deref(), Some("poison"));
        assert!(r.ends_with(&[0, 1, 0, 0, 0, 25]));
        assert!(r[5..].starts_with(b"s1\0"));
    }

    #[tokio::test]
    async fn startup_packets() {
        let mut b = BytesMut::new();
        b.put_i32(8);
        b.put_i32(SSL_REQUEST);
        assert!(matches!(
            read_startup(&mut &b[..]).await.unwrap(),
            Startup::Ssl
        ));
        let mut b = BytesMut::new();
        let body = b"user\0u\0database\0d\0\0";
        b.put_i32(8 + body.len() as i32);
        b.put_i32(PROTOCOL_3_0);
        b.put_slice(body);
        match read_startup(&mut &b[..]).await.unwrap() {
            Startup::Message { version, params } => {
                assert_eq!(version, PROTOCOL_3_0);
                assert_eq!(Startup::param(&params, "database").as_deref(), Some("d"));
            }
            other => panic!("{other:?}"),
        }
        let mut b = BytesMut::new();
        b.put_i32(100_000);
        assert!(read_startup(&mut &b[..]).await.is_err());
    }
}
