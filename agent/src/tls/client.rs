//! The client side: TLS towards real upstream servers.
//!
//! rustls-native-certs treats `SSL_CERT_FILE` / `SSL_CERT_DIR` as a *replacement* for the
//! system store (OpenSSL semantics). Operators set them to add a corporate CA, and losing the
//! public roots when they do would break every other destination, so here they *add* to the
//! system store instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, version};
use rustls_pki_types::CertificateDer;

use super::{ALPN_H2, ALPN_HTTP11, TlsError};

const ENV_CERT_FILE: &str = "SSL_CERT_FILE";
const ENV_CERT_DIR: &str = "SSL_CERT_DIR";

/// Where the upstream trust anchors come from.
#[derive(Debug, Clone, Default)]
pub struct UpstreamRoots {
    /// Include the operating system's store.
    pub system: bool,
    /// PEM bundles (e.g. `SSL_CERT_FILE`).
    pub files: Vec<PathBuf>,
    /// Directories whose every file is read as PEM (e.g. `SSL_CERT_DIR`).
    pub dirs: Vec<PathBuf>,
    /// Certificates supplied directly (tests, embedded CAs).
    pub extra: Vec<CertificateDer<'static>>,
}

impl UpstreamRoots {
    /// The system store plus `SSL_CERT_FILE` and `SSL_CERT_DIR` (a `:`-separated list), if set.
    pub fn from_env() -> Self {
        let files = std::env::var_os(ENV_CERT_FILE)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .collect();
        let dirs = std::env::var_os(ENV_CERT_DIR)
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            system: true,
            files,
            dirs,
            extra: Vec::new(),
        }
    }

    /// Builds the root store. Unreadable sources are logged and skipped; an empty result is
    /// an error, since every upstream handshake would fail.
    pub fn load(&self) -> Result<RootCertStore, TlsError> {
        let mut certs = self.extra.clone();
        if self.system {
            certs.extend(system_roots());
        }
        for file in &self.files {
            certs.extend(load_path(Some(file), None));
        }
        for dir in &self.dirs {
            certs.extend(load_path(None, Some(dir)));
        }
        // Bundles and hashed-symlink directories usually overlap.
        certs.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        certs.dedup();

        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs);
        if ignored > 0 {
            tracing::debug!(
                added,
                ignored,
                "ignored unparsable upstream root certificates"
            );
        }
        if store.is_empty() {
            return Err(TlsError::NoRoots);
        }
        Ok(store)
    }
}

/// Client config for upstream TLS: system roots plus `SSL_CERT_FILE` / `SSL_CERT_DIR`,
/// TLS 1.2+, ALPN `h2` then `http/1.1` (the upstream client speaks whichever is chosen).
pub fn upstream_client_config() -> Result<Arc<ClientConfig>, TlsError> {
    upstream_client_config_with_alpn(vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()])
}

/// As [`upstream_client_config`], offering `alpn` (most preferred first).
pub fn upstream_client_config_with_alpn(alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>, TlsError> {
    upstream_client_config_from(&UpstreamRoots::from_env(), alpn)
}

/// A client config trusting exactly `roots`. There is deliberately no way to skip
/// certificate verification.
pub fn upstream_client_config_from(
    roots: &UpstreamRoots,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let store = roots.load()?;
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// The platform store, without the `SSL_CERT_*` override rustls-native-certs would apply.
#[cfg(target_os = "linux")]
fn system_roots() -> Vec<CertificateDer<'static>> {
    // openssl-probe's Linux locations: the first bundle that exists, and every directory.
    const FILES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/ssl/cert.pem",
        "/opt/etc/ssl/certs/ca-certificates.crt",
        "/etc/ssl/certs/cacert.pem",
    ];
    const DIRS: &[&str] = &[
        "/etc/ssl/certs",
        "/etc/pki/tls/certs",
        "/etc/security/certificates",
    ];
    let mut certs = Vec::new();
    if let Some(file) = FILES.iter().map(Path::new).find(|p| p.exists()) {
        certs.extend(load_path(Some(file), None));
    }
    for dir in DIRS.iter().map(Path::new).filter(|p| p.is_dir()) {
        certs.extend(load_path(None, Some(dir)));
    }
    certs
}

/// Elsewhere the platform store is an OS API. Limitation: there rustls-native-certs lets the
/// `SSL_CERT_*` variables replace it, so the system roots are missing when they are set.
#[cfg(not(target_os = "linux"))]
fn system_roots() -> Vec<CertificateDer<'static>> {
    let result = rustls_native_certs::load_native_certs();
    for error in &result.errors {
        tracing::warn!(%error, "loading system root certificates");
    }
    result.certs
}

fn load_path(file: Option<&Path>, dir: Option<&Path>) -> Vec<CertificateDer<'static>> {
    if let Some(path) = file.or(dir)
        && !path.exists()
    {
        tracing::warn!(path = %path.display(), "upstream root certificate source does not exist");
        return Vec::new();
    }
    let result = rustls_native_certs::load_certs_from_paths(file, dir);
    for error in &result.errors {
        tracing::warn!(%error, "loading upstream root certificates");
    }
    result.certs
}
