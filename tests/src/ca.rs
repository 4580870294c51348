//! Test certificate authorities made at test time with rcgen (nothing checked in).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca cert");
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let cert_der = cert.der().clone();
        let issuer = Issuer::new(params, key);
        Self {
            cert_pem,
            key_pem,
            cert_der,
            issuer,
        }
    }

    /// Writes ca.crt / ca.key into `dir` and returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let c = dir.join("ca.crt");
        let k = dir.join("ca.key");
        std::fs::write(&c, &self.cert_pem).expect("write ca.crt");
        std::fs::write(&k, &self.key_pem).expect("write ca.key");
        (c, k)
    }

    /// A server certificate for `names` (DNS names or IP literals) signed by this CA.
    pub fn server_cert(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("dns name")),
            })
            .collect();
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.cert_der.clone()], key_der)
    }

    /// A rustls server config presenting a certificate for `names` signed by this CA, offering
    /// `alpn` (empty: no ALPN).
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> rustls::ServerConfig {
        let (chain, key) = self.server_cert(names);
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }

    /// A TLS acceptor for [`TestCa::server_config`].
    pub fn acceptor(&self, names: &[&str], alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::new(self.server_config(names, alpn)))
    }

    /// As [`TestCa::server_cert`], as PEM: (certificate chain, private key), for servers that
    /// read files (e.g. a Python gRPC server).
    pub fn server_cert_pem(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.subject_alt_names = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().expect("dns name")))
            .collect();
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        )
    }

    /// [`TestCa::server_cert_pem`] written to `{stem}.crt` and `{stem}.key` in `dir`, for a
    /// server in another process; returns their paths.
    pub fn write_server_cert(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (chain, key) = self.server_cert_pem(names);
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, chain).expect("write server cert");
        std::fs::write(&k, key).expect("write server key");
        (c, k)
    }

    /// A rustls client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).expect("add root");
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}
