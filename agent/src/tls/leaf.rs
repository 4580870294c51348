//! Minting one leaf certificate and wrapping it in a rustls server config.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ProducesTickets, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ServerConfig, version};
use rustls_pki_types::{DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{CertAuthority, TlsError, random_serial};

/// Leaves are backdated so a client whose clock is slightly behind still accepts them.
const BACKDATE: time::Duration = time::Duration::minutes(1);

/// A server name as the cache keys it and the leaf names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LeafName {
    Dns(String),
    Ip(IpAddr),
}

impl LeafName {
    /// Lower-cases and drops one trailing dot (decision 2), and recognises IP literals,
    /// bracketed IPv6 included, so `Example.COM.` and `example.com` share one leaf.
    pub(crate) fn parse(name: &str) -> Result<Self, TlsError> {
        let invalid = |reason| TlsError::InvalidName {
            name: name.to_string(),
            reason,
        };
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let lower = trimmed.to_ascii_lowercase();
        DnsName::try_from(lower.as_str()).map_err(|_| invalid("not a valid DNS name"))?;
        Ok(Self::Dns(lower))
    }

    /// The cache key: the normalised DNS name, or the canonical text of the address.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Dns(name) => name.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

/// The parts every minted config shares.
pub(crate) struct ConfigTemplate {
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) ticketer: Option<Arc<dyn ProducesTickets>>,
    pub(crate) session_storage: Arc<dyn StoresServerSessions>,
}

impl ConfigTemplate {
    pub(crate) fn new(provider: Arc<CryptoProvider>, alpn: Vec<Vec<u8>>) -> Self {
        // One ticketer and one session cache for every name, so tickets issued under a config
        // stay valid after that config is evicted and re-minted.
        let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "TLS session tickets disabled: creating the ticketer failed");
                None
            }
        };
        Self {
            provider,
            alpn,
            ticketer,
            session_storage: rustls::server::ServerSessionMemoryCache::new(4096),
        }
    }
}

/// Mints a leaf for `name` and builds its server config. CPU-bound; run off the async workers.
pub(crate) fn mint_config(
    ca: &CertAuthority,
    template: &ConfigTemplate,
    name: &LeafName,
    validity: Duration,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (leaf_der, key_der) = mint_leaf(ca, &template.provider, name, validity)?;
    let mut chain = Vec::with_capacity(ca.chain.len() + 1);
    chain.push(leaf_der);
    chain.extend(ca.chain.iter().cloned());

    let signing_key = template
        .provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key_der))?;
    let certified = CertifiedKey::new(chain, signing_key);

    let mut config = ServerConfig::builder_with_provider(Arc::clone(&template.provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = template.alpn.clone();
    config.session_storage = Arc::clone(&template.session_storage);
    if let Some(ticketer) = &template.ticketer {
        config.ticketer = Arc::clone(ticketer);
    }
    Ok(Arc::new(config))
}

/// The leaf certificate (DER) and its fresh ECDSA P-256 key (PKCS#8 DER).
pub(crate) fn mint_leaf(
    ca: &CertAuthority,
    provider: &CryptoProvider,
    name: &LeafName,
    validity: Duration,
) -> Result<
    (
        rustls_pki_types::CertificateDer<'static>,
        PrivatePkcs8KeyDer<'static>,
    ),
    TlsError,
> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;

    let mut params = CertificateParams::default();
    let cn = match name {
        LeafName::Dns(dns) => {
            params.subject_alt_names = vec![SanType::DnsName(dns.as_str().try_into()?)];
            dns.clone()
        }
        LeafName::Ip(ip) => {
            params.subject_alt_names = vec![SanType::IpAddress(*ip)];
            ip.to_string()
        }
    };
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;

    let validity = time::Duration::try_from(validity)
        .map_err(|_| TlsError::InvalidOption("leaf validity out of range".into()))?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now
        .checked_add(validity)
        .ok_or_else(|| TlsError::InvalidOption("leaf validity out of range".into()))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial(provider)?);
    // Lets clients pick the right issuer when the CA was re-keyed under the same name.
    params.use_authority_key_identifier_extension = true;

    let cert = params.signed_by(&key, &ca.issuer)?;
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    Ok((cert.der().clone(), key_der))
}

/// Mean time of a cache-miss mint (leaf key, leaf certificate, server config) under a throwaway
/// ECDSA P-256 CA. Used by `cargo xtask bench`.
pub fn mint_benchmark(iterations: usize) -> Result<Duration, TlsError> {
    let ca = super::generate::ephemeral_ca()?;
    let template = ConfigTemplate::new(super::provider(), vec![super::ALPN_HTTP11.to_vec()]);
    let validity = Duration::from_secs(72 * 3600);
    let iterations = iterations.max(1);
    // One untimed mint so lazy initialisation does not count against the first sample.
    let warmup = LeafName::parse("warmup.bench.invalid")?;
    mint_config(&ca, &template, &warmup, validity)?;

    let names = (0..iterations)
        .map(|i| LeafName::parse(&format!("host{i}.bench.invalid")))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    for name in &names {
        mint_config(&ca, &template, name, validity)?;
    }
    let iterations = u32::try_from(iterations).unwrap_or(u32::MAX);
    Ok(start.elapsed() / iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        let key = |n: &str| LeafName::parse(n).map(|l| l.key());
        assert_eq!(key("Example.COM.").unwrap(), "example.com");
        assert_eq!(key("example.com").unwrap(), "example.com");
        assert_eq!(key("[::1]").unwrap(), "::1");
        assert_eq!(key("0:0::1").unwrap(), "::1");
        assert_eq!(key("127.0.0.1").unwrap(), "127.0.0.1");
        assert!(matches!(
            LeafName::parse("10.0.0.1"),
            Ok(LeafName::Ip(IpAddr::V4(_)))
        ));
        for bad in ["", ".", "..", "a b", "a..b", "\u{e4}.example"] {
            assert!(LeafName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
