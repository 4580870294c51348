//! Reads a TLS ClientHello without answering it: bytes are buffered (so they can be replayed
//! to the upstream verbatim) and fed to rustls' [`Acceptor`], which reassembles the handshake
//! across TCP segments and records, and parses it. Nothing is ever written to the client.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest ClientHello accepted: a full TLS record plus room for post-quantum key shares
/// spread over more than one record.
pub const MAX_HELLO: usize = 32 * 1024;
/// A client has this long to deliver its whole ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("client hello not complete within {0:?}")]
    Timeout(Duration),
    #[error("client hello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("connection closed before the client hello was complete")]
    Closed,
    #[error("not a TLS client hello: {0}")]
    Malformed(String),
    #[error("reading client hello: {0}")]
    Io(#[from] std::io::Error),
}

pub struct ClientHello {
    /// Every byte read from the client, to replay upstream.
    pub raw: Vec<u8>,
    /// The server_name extension, if any.
    pub sni: Option<String>,
}

/// Reads until rustls has a complete ClientHello, with [`MAX_HELLO`] and [`HELLO_TIMEOUT`].
pub async fn read<S: AsyncRead + Unpin>(io: &mut S) -> Result<ClientHello, HelloError> {
    tokio::time::timeout(HELLO_TIMEOUT, read_unbounded_time(io))
        .await
        .map_err(|_| HelloError::Timeout(HELLO_TIMEOUT))?
}

async fn read_unbounded_time<S: AsyncRead + Unpin>(io: &mut S) -> Result<ClientHello, HelloError> {
    let mut acceptor = Acceptor::default();
    let mut raw = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        if raw.len() + n > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        raw.extend_from_slice(&chunk[..n]);
        let mut rd = &chunk[..n];
        while !rd.is_empty() {
            let fed = acceptor
                .read_tls(&mut rd)
                .map_err(|e| HelloError::Malformed(e.to_string()))?;
            if fed == 0 {
                return Err(HelloError::TooLarge);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_string);
                return Ok(ClientHello { raw, sni });
            }
            Ok(None) => {}
            Err((e, _alert)) => return Err(HelloError::Malformed(e.to_string())),
        }
    }
}
