//! TLS: the MITM certificate authority, leaf minting and caching, CA generation, and the
//! upstream client configuration.
//!
//! * [`CertAuthority`] loads `tls.ca_cert` / `tls.ca_key` ([`ca`]).
//! * [`LeafCache`] mints ECDSA P-256 leaves on demand and hands out ready rustls server
//!   configs, one per server name, single-flight and LRU-bounded ([`cache`], [`leaf`]).
//! * [`generate_ca`] backs `iron-agent generate-ca` ([`generate`]).
//! * [`upstream_client_config`] is the client side towards real servers ([`client`]).
//!
//! Everything uses the aws-lc-rs provider explicitly, never the process-wide default, so
//! another crate installing a different default cannot change what we do.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub mod ca;
pub mod cache;
pub mod client;
pub mod generate;
pub mod leaf;

pub use ca::CertAuthority;
pub use cache::LeafCache;
pub use client::{
    UpstreamRoots, upstream_client_config, upstream_client_config_from,
    upstream_client_config_with_alpn,
};
pub use generate::{CaAlgorithm, GenerateCaOptions, GeneratedCa, generate_ca};
pub use leaf::mint_benchmark;

/// ALPN protocol id for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN protocol id for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA certificate {}: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },
    #[error("CA key {}: {reason}", path.display())]
    CaKey { path: PathBuf, reason: String },
    #[error("CA key {} does not match the public key of CA certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("invalid server name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("no trusted root certificates found (system store, SSL_CERT_FILE, SSL_CERT_DIR)")]
    NoRoots,
    #[error("internal: system random number generator failed")]
    Random,
    #[error("internal: leaf mint task failed: {0}")]
    MintTask(#[source] tokio::task::JoinError),
}

/// The provider every config in this module is built with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// 16 random bytes with the top bit cleared: a positive 128-bit serial, as Go's generator makes.
pub(crate) fn random_serial(provider: &CryptoProvider) -> Result<rcgen::SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Random)?;
    bytes[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
