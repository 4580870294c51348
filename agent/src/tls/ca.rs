//! Loading the MITM certificate authority (`tls.ca_cert`, `tls.ca_key`).

use std::fmt;
use std::path::Path;

use rcgen::{Issuer, KeyPair};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// The CA that signs leaf certificates, plus the chain sent after each leaf.
pub struct CertAuthority {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// The signing CA first, then any further certificates from the cert file.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    certificate: CertificateDer<'static>,
    subject: String,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("subject", &self.subject)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Loads a PEM CA certificate file and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// The first CERTIFICATE block signs leaves; further blocks (intermediates) are sent after it.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read {
            path: cert.to_path_buf(),
            source,
        })?;
        let key_pem = std::fs::read(key).map_err(|source| TlsError::Read {
            path: key.to_path_buf(),
            source,
        })?;
        Self::from_pem_labelled(&cert_pem, cert, &key_pem, key)
    }

    /// As [`CertAuthority::load`], from PEM bytes already in memory.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_labelled(
            cert_pem,
            Path::new("<ca certificate>"),
            key_pem,
            Path::new("<ca key>"),
        )
    }

    fn from_pem_labelled(
        cert_pem: &[u8],
        cert_path: &Path,
        key_pem: &[u8],
        key_path: &Path,
    ) -> Result<Self, TlsError> {
        let cert_err = |reason: String| TlsError::CaCert {
            path: cert_path.to_path_buf(),
            reason,
        };
        let key_err = |reason: String| TlsError::CaKey {
            path: key_path.to_path_buf(),
            reason,
        };

        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("not valid PEM: {e}")))?;
        let Some(ca_der) = chain.first() else {
            return Err(cert_err("no PEM CERTIFICATE block found".into()));
        };
        let (_, ca) = X509Certificate::from_der(ca_der)
            .map_err(|e| cert_err(format!("parsing the first certificate: {e}")))?;
        check_is_signing_ca(&ca).map_err(|r| cert_err(r.into()))?;
        for (i, extra) in chain.iter().enumerate().skip(1) {
            X509Certificate::from_der(extra)
                .map_err(|e| cert_err(format!("parsing certificate #{}: {e}", i + 1)))?;
        }

        let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => key_err(
                "no unencrypted private key found (expected PEM PRIVATE KEY, RSA PRIVATE KEY or \
                 EC PRIVATE KEY)"
                    .into(),
            ),
            e => key_err(format!("not valid PEM: {e}")),
        })?;
        let key_pair = KeyPair::try_from(&key_der).map_err(|e| {
            key_err(format!(
                "unsupported or malformed key (RSA, ECDSA P-256/P-384 or Ed25519 expected): {e}"
            ))
        })?;

        // Signing with a key that is not the CA's would produce leaves no client can verify, and
        // the failure would only show up at handshake time; comparing public keys is cheap.
        if key_pair.public_key_raw() != &*ca.tbs_certificate.subject_pki.subject_public_key.data {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }

        let issuer = Issuer::from_ca_cert_der(ca_der, key_pair)
            .map_err(|e| cert_err(format!("unusable as issuer: {e}")))?;
        let subject = ca.subject().to_string();
        // Not fatal, as in iron-proxy, but every handshake would fail, so say why up front.
        if !ca.validity().is_valid() {
            tracing::warn!(
                path = %cert_path.display(),
                not_before = %ca.validity().not_before,
                not_after = %ca.validity().not_after,
                "CA certificate is outside its validity period; clients will reject minted leaves"
            );
        }
        let certificate = ca_der.clone();
        Ok(Self {
            issuer,
            chain,
            certificate,
            subject,
        })
    }

    /// The signing CA certificate (the first block of the cert file).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The certificates sent after each leaf: the signing CA, then any intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The CA's subject, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// Same checks, and in iron-proxy's words, as its `certcache.LoadCA`.
fn check_is_signing_ca(ca: &X509Certificate<'_>) -> Result<(), &'static str> {
    let is_ca = ca
        .basic_constraints()
        .map_err(|_| "malformed basicConstraints extension")?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("certificate is not a CA (basicConstraints CA:TRUE missing)");
    }
    let can_sign = ca
        .key_usage()
        .map_err(|_| "malformed keyUsage extension")?
        .is_some_and(|ku| ku.value.key_cert_sign());
    if !can_sign {
        return Err("CA certificate missing keyUsage keyCertSign");
    }
    Ok(())
}
