//! HTTPS origin for `cargo xtask bench`.
//!
//! Generates a throwaway CA and a `localhost` leaf (plus any `--name`s), writes the CA to `--ca-dir/origin-ca.crt`,
//! serves HTTP/1.1 over rustls and prints one JSON line `{"addr": "...", "ca": "..."}` on stdout
//! once it is accepting. Routes: `/small` (100 bytes), `/1mib` (1 MiB), anything else 404.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const SMALL_LEN: usize = 100;
const LARGE_LEN: usize = 1 << 20;

struct Args {
    ca_dir: PathBuf,
    listen: SocketAddr,
    /// Extra DNS names for the leaf (e.g. `bench.test` for the interception bench).
    names: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut ca_dir = None;
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut names = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ca-dir" => {
                ca_dir = Some(PathBuf::from(it.next().context("--ca-dir needs a value")?))
            }
            "--listen" => {
                listen = it
                    .next()
                    .context("--listen needs a value")?
                    .parse()
                    .context("--listen must be ip:port")?;
            }
            "--name" => names.push(it.next().context("--name needs a value")?),
            other => bail!(
                "unknown argument {other:?} (usage: bench-origin --ca-dir DIR [--listen ADDR] [--name DNS]...)"
            ),
        }
    }
    Ok(Args {
        ca_dir: ca_dir.context("--ca-dir is required")?,
        listen,
        names,
    })
}

/// Returns the server config and the CA certificate PEM clients must trust.
fn make_tls(names: &[String]) -> Result<(rustls::ServerConfig, String)> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "iron-agent bench origin CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    // 127.0.0.1 as well so a client that skips the name can still verify.
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    sans.extend_from_slice(names);
    let mut leaf_params = CertificateParams::new(sans)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, ca.pem()))
}

async fn handle(
    req: Request<Incoming>,
    small: Bytes,
    large: Bytes,
) -> Result<Response<Full<Bytes>>> {
    let (status, body) = match req.uri().path() {
        "/small" => (StatusCode::OK, small),
        "/1mib" => (StatusCode::OK, large),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

async fn serve_conn(tcp: TcpStream, acceptor: TlsAcceptor, small: Bytes, large: Bytes) {
    let _ = tcp.set_nodelay(true);
    // Handshake and connection errors are the client's business (oha closes mid-request at the end
    // of a timed run); the origin just drops the connection.
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let svc = service_fn(move |req| handle(req, small.clone(), large.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, small: Bytes, large: Bytes) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(serve_conn(
                    tcp,
                    acceptor.clone(),
                    small.clone(),
                    large.clone(),
                ));
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let (config, ca_pem) = make_tls(&args.names)?;
    std::fs::create_dir_all(&args.ca_dir)
        .with_context(|| format!("creating {}", args.ca_dir.display()))?;
    let ca_path = args.ca_dir.join("origin-ca.crt");
    std::fs::write(&ca_path, ca_pem).with_context(|| format!("writing {}", ca_path.display()))?;

    let acceptor = TlsAcceptor::from(Arc::new(config));
    let small = Bytes::from(vec![b'a'; SMALL_LEN]);
    let large = Bytes::from(vec![b'b'; LARGE_LEN]);

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // "localhost" may resolve to ::1 first (in the agent's resolver or oha's); serve the same port
    // there too when we can so the name works either way.
    if addr.ip().is_loopback()
        && let Ok(v6) = TcpListener::bind(SocketAddr::from((
            std::net::Ipv6Addr::LOCALHOST,
            addr.port(),
        )))
        .await
    {
        tokio::spawn(accept_loop(
            v6,
            acceptor.clone(),
            small.clone(),
            large.clone(),
        ));
    }

    println!(
        "{}",
        serde_json::json!({ "addr": addr.to_string(), "ca": ca_path.display().to_string() })
    );
    accept_loop(listener, acceptor, small, large).await;
    Ok(())
}
