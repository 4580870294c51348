//! The uid owning the other end of a loopback TCP connection, from `/proc/net/tcp{,6}`.
//!
//! In eBPF mode a governed workload could connect to the agent's listener directly instead of
//! being redirected; it must still get its own identity's policy, so the agent finds out who
//! it is. Only used for connections the kernel did not redirect.

use std::net::{IpAddr, SocketAddr};

use super::addr::{ClientAddr, LocalAddr};
use super::ids::Uid;

/// The uid that owns the socket `client` connected to `local`, if the kernel lists it.
pub fn loopback_peer_uid(client: ClientAddr, local: LocalAddr) -> Option<Uid> {
    let (peer, local) = (client.0, local.0);
    let file = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(file).ok()?;
    let (want_local, want_remote) = (encode(peer), encode(local));
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7
            && f[1].eq_ignore_ascii_case(&want_local)
            && f[2].eq_ignore_ascii_case(&want_remote))
        .then(|| f[7].parse().ok().map(Uid))
        .flatten()
    })
}

/// `/proc/net/tcp` address format: 32-bit words in host (little-endian) order, then the port.
fn encode(a: SocketAddr) -> String {
    let words: Vec<String> = match a.ip() {
        IpAddr::V4(v4) => vec![format!("{:08X}", u32::from_le_bytes(v4.octets()))],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    format!("{}:{:04X}", words.concat(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        assert_eq!(encode("127.0.0.1:8080".parse().unwrap()), "0100007F:1F90");
        assert_eq!(
            encode("[::1]:80".parse().unwrap()),
            "00000000000000000000000001000000:0050"
        );
    }

    #[test]
    fn finds_our_own_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        assert_eq!(
            loopback_peer_uid(ClientAddr(peer), LocalAddr(s.local_addr().unwrap())),
            Some(Uid(uid))
        );
        drop(c);
    }
}
