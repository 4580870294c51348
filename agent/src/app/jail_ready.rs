//! The jail's readiness probe. The metrics port is picked free and released before the agent
//! binds it, so another process could bind it first and answer `/readyz` 200: the jail would
//! then start CMD before the programs are attached. The answer is trusted only when the socket
//! listening on that address is one this process holds (its inode is among our descriptors);
//! a squatter's listener is never ours, and two listeners cannot share the address across users.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Whether `addr` answers `/readyz` with 200 and the listener there is this process's own.
pub async fn ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
    };
    let answered = tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    if !answered {
        return false;
    }
    match tokio::task::spawn_blocking(move || listener_is_ours(addr)).await {
        Ok(true) => true,
        _ => {
            tracing::warn!(%addr, "a process other than the agent answers on its readiness port; not trusted");
            false
        }
    }
}

/// The inode of the IPv4 socket listening on `addr` (`/proc/net/tcp`, state `0A`).
fn listening_inode(table: &str, addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(a) = addr else { return None };
    // /proc/net/tcp prints the address as the u32 in host byte order, in hex.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(a.ip().octets()),
        a.port()
    );
    let any = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(Ipv4Addr::UNSPECIFIED.octets()),
        a.port()
    );
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        ((*local == want || *local == any) && *state == "0A")
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// Whether the socket listening on `addr` is held by one of this process's descriptors.
fn listener_is_ours(addr: SocketAddr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let Some(inode) = listening_inode(&table, addr) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /readyz server answering 200 forever, on `listener`.
    async fn serve_ready(listener: tokio::net::TcpListener) {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }

    #[tokio::test]
    async fn a_squatter_answering_readyz_is_not_trusted() {
        // Another process squats a port and answers 200 to everything.
        let mut squatter = std::process::Command::new("python3")
            .args([
                "-c",
                "import http.server,sys\nclass H(http.server.BaseHTTPRequestHandler):\n  def do_GET(s):\n    s.send_response(200); s.end_headers()\nsrv=http.server.HTTPServer(('127.0.0.1',0),H)\nprint(srv.server_address[1],flush=True)\nsrv.serve_forever()",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(squatter.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("port");
        let port: u16 = line.trim().parse().expect("port number");
        let squatted = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let verdict = ready(squatted).await;
        let _ = squatter.kill();
        let _ = squatter.wait();
        assert!(
            !verdict,
            "a 200 from another process must not count as ready"
        );

        // Control: our own listener answering the same way is trusted.
        let own = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = own.local_addr().expect("addr");
        tokio::spawn(serve_ready(own));
        assert!(ready(addr).await);
    }

    #[test]
    fn listening_inode_reads_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 99 1\n";
        let a = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
        assert_eq!(listening_inode(table, a), Some(4242));
        assert_eq!(
            listening_inode(table, SocketAddr::from((Ipv4Addr::LOCALHOST, 8081))),
            None
        );
    }
}
