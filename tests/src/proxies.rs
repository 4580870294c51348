//! Local upstream proxies for the agent to chain through: an HTTP CONNECT proxy (optionally
//! over TLS, optionally requiring Basic credentials) and a SOCKS5 server (optionally requiring
//! a user name and password). Both record every target they were asked for, resolve every
//! name to 127.0.0.1 (or send every tunnel to one fixed address), and splice bytes once the
//! tunnel is up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One tunnel request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `host:port` as requested (a name, or an IP for SOCKS5 IP requests).
    pub target: String,
    /// HTTP: the `Proxy-Authorization` value. SOCKS5: `user:password`.
    pub auth: Option<String>,
}

pub struct TestProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Connect,
    Socks5,
}

impl TestProxy {
    /// An HTTP CONNECT proxy. `require` is the exact `Proxy-Authorization` value it insists on
    /// (407 otherwise). With `tls`, clients must speak TLS to it first.
    pub async fn connect(
        require: Option<&str>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestProxy {
        Self::start(Kind::Connect, require, tls, None).await
    }

    /// An HTTP CONNECT proxy without credentials that connects every tunnel to `fixed`,
    /// whatever was asked (the target is still recorded).
    pub async fn connect_to(fixed: SocketAddr) -> TestProxy {
        Self::start(Kind::Connect, None, None, Some(fixed)).await
    }

    /// A SOCKS5 proxy; `require` is `user:password` (username/password method only), or
    /// `None` for the no-authentication method.
    pub async fn socks5(require: Option<&str>) -> TestProxy {
        Self::start(Kind::Socks5, require, None, None).await
    }

    async fn start(
        kind: Kind,
        require: Option<&str>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        fixed: Option<SocketAddr>,
    ) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let require = require.map(str::to_string);
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, require, tls) = (s.clone(), require.clone(), tls.clone());
                tokio::spawn(async move {
                    let fut = async move {
                        match (kind, tls) {
                            (Kind::Connect, Some(acceptor)) => {
                                if let Ok(s) = acceptor.accept(tcp).await {
                                    serve_connect(s, require, seen, fixed).await;
                                }
                            }
                            (Kind::Connect, None) => serve_connect(tcp, require, seen, fixed).await,
                            (Kind::Socks5, _) => serve_socks5(tcp, require, seen).await,
                        }
                    };
                    // Tunnels in these tests are short; never leave one hanging.
                    let _ = tokio::time::timeout(Duration::from_secs(30), fut).await;
                });
            }
        });
        TestProxy { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }
}

async fn serve_connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    require: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
    fixed: Option<SocketAddr>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte so that nothing after the head is consumed.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || !matches!(s.read(&mut byte).await, Ok(1)) {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        let _ = s
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let auth = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_string())
    });
    seen.lock().expect("seen").push(Seen {
        target: target.to_string(),
        auth: auth.clone(),
    });
    if let Some(want) = require
        && auth.as_deref() != Some(want.as_str())
    {
        let _ = s
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let upstream = match fixed {
        Some(a) => TcpStream::connect(a).await.ok(),
        None => dial(target).await,
    };
    let Some(mut upstream) = upstream else {
        let _ = s
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    if s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut s, &mut upstream).await;
}

/// Every name is 127.0.0.1; the port is the one requested.
async fn dial(target: &str) -> Option<TcpStream> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host
        .parse::<IpAddr>()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    TcpStream::connect(SocketAddr::new(ip, port)).await.ok()
}

async fn serve_socks5(mut s: TcpStream, require: Option<String>, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut hdr = [0u8; 2];
    if s.read_exact(&mut hdr).await.is_err() || hdr[0] != 5 {
        return;
    }
    let mut methods = vec![0u8; hdr[1] as usize];
    if s.read_exact(&mut methods).await.is_err() {
        return;
    }
    let wanted = if require.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        let _ = s.write_all(&[5, 0xff]).await;
        return;
    }
    if s.write_all(&[5, wanted]).await.is_err() {
        return;
    }
    let mut auth = None;
    if let Some(want) = &require {
        // RFC 1929: VER ULEN UNAME PLEN PASSWD.
        let mut v = [0u8; 2];
        if s.read_exact(&mut v).await.is_err() {
            return;
        }
        let mut user = vec![0u8; v[1] as usize];
        let mut plen = [0u8; 1];
        if s.read_exact(&mut user).await.is_err() || s.read_exact(&mut plen).await.is_err() {
            return;
        }
        let mut pass = vec![0u8; plen[0] as usize];
        if s.read_exact(&mut pass).await.is_err() {
            return;
        }
        let got = format!(
            "{}:{}",
            String::from_utf8_lossy(&user),
            String::from_utf8_lossy(&pass)
        );
        let ok = &got == want;
        auth = Some(got);
        if s.write_all(&[1, if ok { 0 } else { 1 }]).await.is_err() || !ok {
            return;
        }
    }
    let mut req = [0u8; 4];
    if s.read_exact(&mut req).await.is_err() || req[0] != 5 {
        return;
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            if s.read_exact(&mut a).await.is_err() {
                return;
            }
            Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            if s.read_exact(&mut a).await.is_err() {
                return;
            }
            format!("[{}]", Ipv6Addr::from(a))
        }
        3 => {
            let mut len = [0u8; 1];
            if s.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut name = vec![0u8; len[0] as usize];
            if s.read_exact(&mut name).await.is_err() {
                return;
            }
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => return,
    };
    let mut port = [0u8; 2];
    if s.read_exact(&mut port).await.is_err() {
        return;
    }
    let target = format!("{host}:{}", u16::from_be_bytes(port));
    seen.lock().expect("seen").push(Seen {
        target: target.clone(),
        auth,
    });
    const BOUND: [u8; 6] = [0, 0, 0, 0, 0, 0];
    if req[1] != 1 {
        let _ = s.write_all(&[&[5, 7, 0, 1][..], &BOUND].concat()).await;
        return;
    }
    let Some(mut upstream) = dial(&target).await else {
        let _ = s.write_all(&[&[5, 5, 0, 1][..], &BOUND].concat()).await;
        return;
    };
    if s.write_all(&[&[5, 0, 0, 1][..], &BOUND].concat())
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut s, &mut upstream).await;
}
