//! SOCKS5 (RFC 1928), the subset a proxy client needs: the no-auth method and the CONNECT
//! command to an IPv4, IPv6 or domain address. Every refusal gets the RFC's reply code.

use std::net::{Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{HandshakeError, Refusal, Target};

pub const VERSION: u8 = 0x05;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// Audit status of a SOCKS5 refusal: SOCKS has no HTTP status, so as for a denied setup, 403.
const REFUSAL_STATUS: u16 = 403;

/// Sends `code` and returns the refusal to audit. A failed write is not an error of its own:
/// the refusal was decided either way.
async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    code: Reply,
    reason: &'static str,
    target: Option<Target>,
    detail: String,
) -> HandshakeError {
    let _ = reply(io, code).await;
    HandshakeError::Refused(Refusal {
        reason,
        status: REFUSAL_STATUS,
        target,
        detail,
    })
}

/// Method negotiation and the request. Returns the target; refusals are answered here and
/// returned as [`HandshakeError::Refused`].
pub async fn read_request<S>(io: &mut S) -> Result<Target, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Greeting: VER NMETHODS METHODS...
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(HandshakeError::Malformed(format!(
            "socks version {}",
            head[0]
        )));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    io.read_exact(&mut methods).await?;
    if !methods.contains(&METHOD_NO_AUTH) {
        let _ = io.write_all(&[VERSION, METHOD_NONE_ACCEPTABLE]).await;
        return Err(HandshakeError::Refused(Refusal {
            reason: "socks5_no_acceptable_method",
            status: REFUSAL_STATUS,
            target: None,
            detail: "socks5: client offers no acceptable auth method (only no-auth is supported)"
                .into(),
        }));
    }
    io.write_all(&[VERSION, METHOD_NO_AUTH]).await?;

    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    let mut req = [0u8; 4];
    io.read_exact(&mut req).await?;
    if req[0] != VERSION {
        return Err(HandshakeError::Malformed(format!(
            "socks request version {}",
            req[0]
        )));
    }
    let Some(host) = read_host(io, req[3]).await? else {
        let detail = format!("socks5 address type {:#04x} not supported", req[3]);
        let code = if req[1] == CMD_CONNECT {
            Reply::AddressTypeNotSupported
        } else {
            Reply::CommandNotSupported
        };
        let reason = if req[1] == CMD_CONNECT {
            "socks5_address_type_not_supported"
        } else {
            "socks5_command_not_supported"
        };
        return Err(refuse(io, code, reason, None, detail).await);
    };
    let mut port = [0u8; 2];
    io.read_exact(&mut port).await?;
    let target = Target::new(&host, u16::from_be_bytes(port));
    if req[1] != CMD_CONNECT {
        // The address was read so the record can name what the client asked for.
        let detail = format!("socks5 command {:#04x} not supported", req[1]);
        let reason = "socks5_command_not_supported";
        return Err(refuse(io, Reply::CommandNotSupported, reason, target, detail).await);
    }
    match target {
        Some(t) => Ok(t),
        None => {
            let detail = format!("socks5 destination {host:?} is not a host name");
            let reason = "socks5_invalid_destination";
            Err(refuse(io, Reply::GeneralFailure, reason, None, detail).await)
        }
    }
}

/// Reads DST.ADDR of address type `atyp`; `None` for a type this server does not know (its
/// length is unknown, so nothing more can be read).
async fn read_host<S: AsyncRead + Unpin>(io: &mut S, atyp: u8) -> std::io::Result<Option<String>> {
    Ok(Some(match atyp {
        ATYP_IPV4 => {
            let mut a = [0u8; 4];
            io.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        ATYP_IPV6 => {
            let mut a = [0u8; 16];
            io.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            io.read_exact(&mut name).await?;
            String::from_utf8(name).unwrap_or_default()
        }
        _ => return Ok(None),
    }))
}

/// Writes a reply with BND.ADDR 0.0.0.0:0 (the agent does not dial at setup; there is no
/// meaningful bound address to report).
pub async fn reply<S: AsyncWrite + Unpin>(io: &mut S, code: Reply) -> std::io::Result<()> {
    io.write_all(&[VERSION, code as u8, 0x00, ATYP_IPV4, 0, 0, 0, 0, 0, 0])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(client_bytes: &[u8]) -> (Result<Target, HandshakeError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(client_bytes).await.unwrap();
        let res = read_request(&mut server).await;
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (res, out)
    }

    #[tokio::test]
    async fn domain_ipv4_ipv6() {
        let (t, out) = run(b"\x05\x01\x00\x05\x01\x00\x03\x06a.test\x01\xbb").await;
        assert_eq!(t.unwrap().authority(), "a.test:443");
        assert_eq!(out, [5, 0]);
        let (t, _) = run(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50").await;
        assert_eq!(t.unwrap().authority(), "127.0.0.1:80");
        let mut v6 = b"\x05\x01\x00\x05\x01\x00\x04".to_vec();
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0x20, 0xfb]);
        let (t, _) = run(&v6).await;
        assert_eq!(t.unwrap().authority(), "[::1]:8443");
    }

    /// The refusal's audit reason and target, or a panic if the request was not refused.
    fn refused(res: Result<Target, HandshakeError>) -> (&'static str, Option<String>) {
        match res {
            Err(HandshakeError::Refused(r)) => {
                assert_eq!(r.status, 403);
                (r.reason, r.target.map(|t| t.authority()))
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn refusals_carry_rfc_codes() {
        let (t, out) = run(b"\x05\x01\x02").await;
        assert_eq!(refused(t), ("socks5_no_acceptable_method", None));
        assert_eq!(out, [5, 0xff]);
        let (t, out) = run(b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50").await;
        let want = Some("127.0.0.1:80".to_string());
        assert_eq!(refused(t), ("socks5_command_not_supported", want));
        assert_eq!(&out[2..4], [5, 0x07]);
        let (t, out) = run(b"\x05\x01\x00\x05\x01\x00\x09").await;
        assert_eq!(refused(t), ("socks5_address_type_not_supported", None));
        assert_eq!(&out[2..4], [5, 0x08]);
        let (t, out) = run(b"\x05\x01\x00\x05\x01\x00\x03\x03a b\x01\xbb").await;
        assert_eq!(refused(t), ("socks5_invalid_destination", None));
        assert_eq!(&out[2..4], [5, 0x01]);
        // Not SOCKS5 after all: no answer.
        let (t, out) = run(b"\x04\x01\x00\x50").await;
        assert!(matches!(t, Err(HandshakeError::Malformed(_))), "{t:?}");
        assert!(out.is_empty());
    }
}
