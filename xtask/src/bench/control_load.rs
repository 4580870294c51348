//! A minimal blocking HTTP/1.1 keep-alive client for the iron-control bench: seeding through
//! the API and the sync load (each request with its own proxy token, which oha cannot do).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            addr,
            reader: BufReader::new(s),
        })
    }

    /// Sends one request; returns (status, body).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> Result<(u16, Vec<u8>)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().context("content-length")?;
            }
        }
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf)?;
        Ok((status, buf))
    }

    /// A JSON API call that must answer `want`; returns the parsed body.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: &Value,
        want: u16,
    ) -> Result<Value> {
        let (status, b) = self.request(method, path, key, &body.to_string())?;
        if status != want {
            bail!(
                "{method} {path}: {status} (wanted {want}): {}",
                String::from_utf8_lossy(&b)
            );
        }
        Ok(serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

/// Runs `work(i)` for i in 0..n on `threads` threads, each with its own connection.
pub fn parallel<T: Send>(
    addr: SocketAddr,
    n: usize,
    threads: usize,
    work: impl Fn(&mut Conn, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut c = Conn::open(addr)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let r = work(&mut c, i)?;
                        if let Ok(mut v) = results.lock() {
                            v.push((i, r));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        }
        Ok(())
    })?;
    let mut v = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    v.sort_by_key(|(i, _)| *i);
    Ok(v.into_iter().map(|(_, r)| r).collect())
}

#[derive(Clone, Debug)]
pub struct LoadResult {
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Sync load for `duration`: `conns` connections, each request from the next proxy in turn,
/// sending `hashes[i]` as the held config hash when given (the steady-state poll).
pub fn sync_load(
    addr: SocketAddr,
    tokens: &[String],
    hashes: Option<&[String]>,
    conns: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + duration;
    let per: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(|| -> Result<(Vec<Duration>, usize)> {
                    let mut c = Conn::open(addr)?;
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    while Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed) % tokens.len();
                        let body = match hashes {
                            Some(h) => format!("{{\"config_hash\":\"{}\"}}", h[i]),
                            None => "{}".to_owned(),
                        };
                        let t = Instant::now();
                        match c.request("POST", "/api/v1/proxy/sync", &tokens[i], &body) {
                            Ok((200, _)) => lat.push(t.elapsed()),
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                c = Conn::open(addr)?;
                            }
                        }
                    }
                    Ok((lat, errors))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("load thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let errors = per.iter().map(|(_, e)| e).sum();
    let mut all: Vec<Duration> = per.into_iter().flat_map(|(l, _)| l).collect();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(LoadResult {
        requests: all.len(),
        errors,
        seconds,
        rps: all.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}
