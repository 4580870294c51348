//! `iron-agent generate-ca`: a fresh self-signed CA written as `ca.crt` and `ca.key`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
};

use super::{CertAuthority, TlsError, random_serial};

/// Default CA common name.
pub const DEFAULT_CA_NAME: &str = "iron-agent CA";
/// Default CA lifetime: 90 days, the upper end of the docs' recommendation for short-lived use.
pub const DEFAULT_EXPIRY_HOURS: u64 = 2160;
/// Longest CA lifetime accepted (about 100 years); beyond that the dates stop being meaningful.
const MAX_EXPIRY_HOURS: u64 = 100 * 366 * 24;

/// Key algorithm of a generated CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaAlgorithm {
    /// ECDSA P-256 with SHA-256: small, fast, accepted everywhere.
    #[default]
    EcdsaP256,
    /// RSA 4096 with SHA-256: iron-proxy's default, for stacks without ECDSA.
    Rsa4096,
    /// Ed25519: not accepted by some TLS stacks (browsers among them).
    Ed25519,
}

impl CaAlgorithm {
    pub const ALL: [CaAlgorithm; 3] = [Self::EcdsaP256, Self::Rsa4096, Self::Ed25519];

    /// The spelling used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Rsa4096 => "rsa4096",
            Self::Ed25519 => "ed25519",
        }
    }

    fn generate_key(self) -> Result<KeyPair, TlsError> {
        Ok(match self {
            Self::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            Self::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096)?,
            Self::Ed25519 => KeyPair::generate_for(&PKCS_ED25519)?,
        })
    }
}

impl fmt::Display for CaAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaAlgorithm {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                TlsError::InvalidOption(format!(
                    "unsupported algorithm {s:?} (use ecdsa-p256, rsa4096 or ed25519)"
                ))
            })
    }
}

/// Options of `iron-agent generate-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateCaOptions {
    /// Directory to write `ca.crt` and `ca.key` into; created (0755) if missing.
    pub outdir: PathBuf,
    /// Subject common name.
    pub name: String,
    /// Lifetime in hours from now.
    pub expiry_hours: u64,
    pub alg: CaAlgorithm,
}

impl Default for GenerateCaOptions {
    fn default() -> Self {
        Self {
            outdir: PathBuf::from("."),
            name: DEFAULT_CA_NAME.to_string(),
            expiry_hours: DEFAULT_EXPIRY_HOURS,
            alg: CaAlgorithm::default(),
        }
    }
}

/// The files [`generate_ca`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedCa {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Generates a CA and writes `ca.crt` (0644) and `ca.key` (0600, PKCS#8) into `opts.outdir`.
///
/// Never overwrites: if either file exists nothing is written and the error names it.
pub fn generate_ca(opts: &GenerateCaOptions) -> Result<GeneratedCa, TlsError> {
    let (cert_pem, key_pem) = build_ca(opts)?;

    let dir = &opts.outdir;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.clone(),
            source,
        })?;
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");

    // Both files are created (exclusively) before either is written, so an existing key does
    // not leave a fresh certificate behind, and any later failure removes both.
    let mut cert_file = create_new(&cert_path, 0o644)?;
    let mut key_file = match create_new(&key_path, 0o600) {
        Ok(f) => f,
        Err(e) => {
            drop(cert_file);
            let _ = fs::remove_file(&cert_path);
            return Err(e);
        }
    };
    let written = write_all(&mut cert_file, &cert_path, cert_pem.as_bytes(), 0o644)
        .and_then(|()| write_all(&mut key_file, &key_path, key_pem.as_bytes(), 0o600));
    if let Err(e) = written {
        drop((cert_file, key_file));
        let _ = fs::remove_file(&cert_path);
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok(GeneratedCa {
        cert_path,
        key_path,
    })
}

/// The CA certificate and PKCS#8 key, both PEM.
fn build_ca(opts: &GenerateCaOptions) -> Result<(String, String), TlsError> {
    if opts.name.trim().is_empty() {
        return Err(TlsError::InvalidOption("CA name must not be empty".into()));
    }
    if opts.expiry_hours == 0 || opts.expiry_hours > MAX_EXPIRY_HOURS {
        return Err(TlsError::InvalidOption(format!(
            "expiry hours must be between 1 and {MAX_EXPIRY_HOURS}, got {}",
            opts.expiry_hours
        )));
    }
    let key = opts.alg.generate_key()?;
    let params = ca_params(&opts.name, opts.expiry_hours)?;
    let cert = params.self_signed(&key)?;
    let key_pem = match opts.alg {
        CaAlgorithm::Ed25519 => ed25519_pkcs8_v1_pem(&key.serialize_der())?,
        _ => key.serialize_pem(),
    };
    Ok((cert.pem(), key_pem))
}

/// The DER prefix of an RFC 8410 Ed25519 `OneAsymmetricKey` version 1 (PKCS#8 v1): SEQUENCE,
/// version 0, algorithm id-Ed25519, OCTET STRING { OCTET STRING (32 bytes) }.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// ring (under rcgen) writes Ed25519 keys as PKCS#8 v2 with the public key attached, which
/// OpenSSL and Python's `cryptography` refuse; Go (iron-proxy) writes v1 with the seed only.
/// The v2 encoding starts with the same fields, so the seed sits at the same offset.
fn ed25519_pkcs8_v1_pem(v2: &[u8]) -> Result<String, TlsError> {
    let seed = v2
        .get(16..48)
        .filter(|_| v2.get(9..12) == Some(&ED25519_V1_PREFIX[9..12]) && v2.len() >= 48)
        .ok_or_else(|| TlsError::InvalidOption("unexpected Ed25519 key encoding".into()))?;
    let mut der = ED25519_V1_PREFIX.to_vec();
    der.extend_from_slice(seed);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"
    ))
}

fn ca_params(name: &str, expiry_hours: u64) -> Result<CertificateParams, TlsError> {
    let hours = i64::try_from(expiry_hours)
        .map_err(|_| TlsError::InvalidOption("expiry hours out of range".into()))?;
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now
        .checked_add(time::Duration::hours(hours))
        .ok_or_else(|| TlsError::InvalidOption("expiry hours out of range".into()))?;
    // rcgen marks basicConstraints and keyUsage critical.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial(&super::provider())?);
    Ok(params)
}

/// A throwaway in-memory ECDSA P-256 CA (benchmarks).
pub(crate) fn ephemeral_ca() -> Result<CertAuthority, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = ca_params("iron-agent ephemeral CA", 24)?.self_signed(&key)?;
    CertAuthority::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

fn create_new(path: &Path, mode: u32) -> Result<File, TlsError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => TlsError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => TlsError::Write {
                path: path.to_path_buf(),
                source,
            },
        })
}

fn write_all(file: &mut File, path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    // The umask may have narrowed the creation mode; the documented modes are exact.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.write_all(data).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_key_is_pkcs8_v1_and_loads() {
        let opts = GenerateCaOptions {
            outdir: PathBuf::new(),
            name: "t".into(),
            expiry_hours: 24,
            alg: CaAlgorithm::Ed25519,
        };
        let (cert, key) = build_ca(&opts).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let der = der.secret_der();
        // Version 0, 48 bytes: no public key attached.
        assert_eq!(der.len(), 48);
        assert_eq!(&der[..16], &ED25519_V1_PREFIX);
        crate::tls::CertAuthority::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    }
}
