//! Reads a TLS ClientHello without answering it: bytes are buffered (so they can be replayed
//! to the upstream verbatim) and fed to rustls' [`Acceptor`], which reassembles the handshake
//! across TCP segments and records, and parses it. Nothing is ever written to the client.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest ClientHello accepted: one maximum-size TLS record (16 KiB plus its header), far
/// above real ones (post-quantum key shares included). rustls' own buffer ends near here too.
pub const MAX_HELLO: usize = 17 * 1024;
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
    Malformed(#[source] rustls::Error),
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
            // Reading from a slice cannot fail: an error here is rustls' buffer being full.
            let fed = acceptor
                .read_tls(&mut rd)
                .map_err(|_| HelloError::TooLarge)?;
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
            Err((e, _alert)) => return Err(HelloError::Malformed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;

    use super::*;

    fn client_hello(name: &str) -> Vec<u8> {
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(cfg), name.to_string().try_into().unwrap())
                .unwrap();
        let mut raw = Vec::new();
        conn.write_tls(&mut raw).unwrap();
        raw
    }

    #[tokio::test]
    async fn reassembles_a_hello_sent_in_pieces() {
        let raw = client_hello("Sni.Test");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = raw.clone();
        tokio::spawn(async move {
            for piece in sent.chunks(7) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Keep the stream open: the reader must stop at the end of the hello by itself.
            std::future::pending::<()>().await;
        });
        let hello = read(&mut server).await.unwrap();
        assert_eq!(hello.sni.as_deref(), Some("sni.test"));
        assert_eq!(hello.raw, raw);
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_hello() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            read(&mut server).await,
            Err(HelloError::Malformed(_))
        ));
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        assert!(matches!(read(&mut server).await, Err(HelloError::Closed)));
    }

    #[tokio::test]
    async fn caps_the_hello_size() {
        // A handshake record header announcing 16 KiB, then endless handshake-looking bytes.
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut rec = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
            rec.resize(2 * MAX_HELLO, 0);
            let _ = client.write_all(&rec).await;
            std::future::pending::<()>().await;
        });
        let err = read(&mut server).await.err().unwrap();
        assert!(matches!(err, HelloError::TooLarge), "{err}");
    }
}
