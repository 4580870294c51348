//! Plain TCP relay for `cargo xtask bench`: the cost of one extra hop without TLS or HTTP.
//!
//! `bench-relay --target ADDR [--listen ADDR]`; prints `{"addr": "..."}` on stdout once accepting.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpListener, TcpStream};

fn parse_args() -> Result<(SocketAddr, SocketAddr)> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut target = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<SocketAddr> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} must be ip:port"))
        };
        match arg.as_str() {
            "--listen" => listen = value("--listen")?,
            "--target" => target = Some(value("--target")?),
            other => bail!(
                "unknown argument {other:?} (usage: bench-relay --target ADDR [--listen ADDR])"
            ),
        }
    }
    Ok((listen, target.context("--target is required")?))
}

async fn relay(mut inbound: TcpStream, target: SocketAddr) {
    // Same socket options as a proxy would use, so the comparison is about the work done, not Nagle.
    let _ = inbound.set_nodelay(true);
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let (listen, target) = parse_args()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!(
        "{}",
        serde_json::json!({ "addr": listener.local_addr()?.to_string() })
    );
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(relay(inbound, target));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}
