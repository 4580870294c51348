//! The two ends of an accepted connection as distinct types: the client's address and the
//! agent's own listening address can never be swapped by mistake.

use std::fmt;
use std::net::SocketAddr;

/// The accepted socket's `peer_addr()`: where the workload connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The accepted socket's `local_addr()`: the agent listener the connection reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalAddr(pub SocketAddr);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
