//! The byte stream to the destination: a direct TCP connection (also what a SOCKS5 handshake
//! leaves), or a tunnel through an HTTP(S) proxy's CONNECT.

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// `Left`: TCP to the destination (direct, or through a SOCKS5 proxy). `Right`: after
/// `CONNECT`, the proxy connection (TCP or TLS) hyper hands back with any bytes it had
/// already read.
pub type DialedStream = Either<TcpStream, TokioIo<Upgraded>>;
