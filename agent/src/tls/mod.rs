//! TLS: the MITM certificate authority, leaf minting and caching, CA generation, and the
//! upstream client configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Other(String),
}

/// The CA that signs leaf certificates.
pub struct CertAuthority {}

impl CertAuthority {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let _ = (cert, key);
        Err(TlsError::Other("not implemented".into()))
    }
}

/// Leaf certificates by server name, each wrapped in a ready rustls server config.
pub struct LeafCache {}

impl LeafCache {
    pub fn new(ca: CertAuthority, capacity: usize, validity: Duration) -> Self {
        let _ = (ca, capacity, validity);
        Self {}
    }

    /// The server config presenting a leaf for `name` (a DNS name or an IP literal).
    pub async fn server_config(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let _ = name;
        Err(TlsError::Other("not implemented".into()))
    }
}

/// Client config for upstream TLS: system roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`.
pub fn upstream_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    Err(TlsError::Other("not implemented".into()))
}

// Placeholder API until the TLS branch lands.
pub enum CaAlgorithm {
    EcdsaP256,
    Rsa4096,
    Ed25519,
}
pub struct GenerateCaOptions {
    pub outdir: std::path::PathBuf,
    pub name: String,
    pub expiry_hours: u64,
    pub alg: CaAlgorithm,
}
pub struct GeneratedCa {
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
}
pub fn generate_ca(_o: &GenerateCaOptions) -> Result<GeneratedCa, TlsError> {
    Err(TlsError::Other("not implemented".into()))
}
pub fn mint_benchmark(_n: usize) -> Result<Duration, TlsError> {
    Err(TlsError::Other("not implemented".into()))
}
