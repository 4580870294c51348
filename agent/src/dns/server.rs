//! Socket plumbing: hickory-server drives the already-bound UDP socket and TCP listener.

use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::DnsError;
use super::handler::DnsHandler;

/// A TCP connection that sends no query for this long is closed, bounding idle connections.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection before the handler waits for the client to read.
const TCP_RESPONSE_BUFFER: usize = 16;

/// Runs until `shutdown` fires. Malformed packets are answered FORMERR or dropped by
/// hickory-server; each request runs in its own task, so one bad request cannot stop the server.
pub async fn run(
    handler: DnsHandler,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    let server_token = server.shutdown_token().clone();

    let done = server.block_until_done();
    tokio::pin!(done);
    let result = tokio::select! {
        // Only returns early if a socket failed for good.
        r = &mut done => r,
        () = shutdown.cancelled() => {
            server_token.cancel();
            done.await
        }
    };
    result.map_err(DnsError::Server)
}
