//! TLS: CA loading, leaf minting and caching over real handshakes on loopback, generate-ca,
//! and the upstream client's trust store.

// Helpers outside #[test] functions are not covered by clippy.toml's allow-*-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use iron_agent::tls::{
    CaAlgorithm, CertAuthority, GenerateCaOptions, LeafCache, TlsError, UpstreamRoots, generate_ca,
    mint_benchmark, upstream_client_config, upstream_client_config_from,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
    SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::{FromDer, X509Certificate};

const H: u64 = 3600;

// ---------------------------------------------------------------- helpers

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "iron-agent-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Splits one DER TLV off the front: (tag, header+content, content, rest).
fn tlv(d: &[u8]) -> (u8, &[u8], &[u8], &[u8]) {
    let tag = d[0];
    let (len, hdr) = if d[1] < 0x80 {
        (d[1] as usize, 2)
    } else {
        let n = (d[1] & 0x7f) as usize;
        let len = d[2..2 + n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, 2 + n)
    };
    (tag, &d[..hdr + len], &d[hdr..hdr + len], &d[hdr + len..])
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// PKCS#8 → (algorithm parameters TLV, inner private key DER).
fn unwrap_pkcs8(pkcs8: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, _, body, _) = tlv(pkcs8);
    let (_, _, _, rest) = tlv(body); // version
    let (_, _, alg, rest) = tlv(rest);
    let (_, _, _, params) = tlv(alg); // algorithm OID, then parameters
    let (_, _, inner, _) = tlv(rest);
    (params.to_vec(), inner.to_vec())
}

/// The key as PKCS#1 `RSA PRIVATE KEY` PEM.
fn rsa_pkcs1_pem(key: &KeyPair) -> String {
    pem("RSA PRIVATE KEY", &unwrap_pkcs8(key.serialized_der()).1)
}

/// The key as SEC1 `EC PRIVATE KEY` PEM, curve parameters included as OpenSSL writes them.
fn ec_sec1_pem(key: &KeyPair) -> String {
    let (curve, inner) = unwrap_pkcs8(key.serialized_der());
    let (_, _, body, _) = tlv(&inner);
    let (_, version, _, rest) = tlv(body);
    let (_, private, _, rest) = tlv(rest);
    let mut content = [version, private].concat();
    content.extend(der(0xa0, &curve));
    let mut rest = rest;
    while !rest.is_empty() {
        let (tag, whole, _, r) = tlv(rest);
        if tag != 0xa0 {
            content.extend_from_slice(whole);
        }
        rest = r;
    }
    pem("EC PRIVATE KEY", &der(0x30, &content))
}

fn ca_params(cn: &str, pathlen: u8) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(pathlen));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn gen_key(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &PKCS_RSA_SHA256 {
        KeyPair::generate_rsa_for(alg, RsaKeySize::_2048).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    }
}

/// A self-signed test CA: (cert DER, cert PEM, key).
fn test_ca(alg: &'static SignatureAlgorithm) -> (CertificateDer<'static>, String, KeyPair) {
    let key = gen_key(alg);
    let cert = ca_params("test CA", 1).self_signed(&key).unwrap();
    (cert.der().clone(), cert.pem(), key)
}

fn client_trusting(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let roots = UpstreamRoots {
        extra: roots.to_vec(),
        ..Default::default()
    };
    upstream_client_config_from(&roots, alpn.iter().map(|a| a.to_vec()).collect()).unwrap()
}

struct Handshake {
    peer_certs: Vec<CertificateDer<'static>>,
    alpn: Option<Vec<u8>>,
    kind: Option<HandshakeKind>,
}

/// Serves one connection the way the proxy will: read the ClientHello, ask the cache for the
/// SNI's config (`fallback` when there is no SNI, e.g. an IP literal), then finish the handshake.
async fn serve_once(cache: Arc<LeafCache>, fallback: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let Ok(start) = acceptor.await else { return };
        let name = start
            .client_hello()
            .server_name()
            .unwrap_or(fallback)
            .to_string();
        let config = cache.server_config(&name).await.unwrap();
        let Ok(mut tls) = start.into_stream(config).await else {
            return;
        };
        let _ = tls.write_all(b"ok").await;
        let _ = tls.flush().await;
        let mut buf = [0u8; 1];
        let _ = tls.read(&mut buf).await;
    });
    addr
}

async fn connect(
    addr: SocketAddr,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<Handshake, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(server_name, tcp)
        .await?;
    // Reading after the handshake also processes TLS 1.3 session tickets.
    let mut buf = [0u8; 2];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ok");
    let (_, conn) = tls.get_ref();
    let out = Handshake {
        peer_certs: conn.peer_certificates().unwrap_or_default().to_vec(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        kind: conn.handshake_kind(),
    };
    let _ = tls.shutdown().await;
    Ok(out)
}

async fn handshake_with(
    cache: &Arc<LeafCache>,
    client: Arc<ClientConfig>,
    name: &'static str,
) -> Result<Handshake, std::io::Error> {
    let addr = serve_once(Arc::clone(cache), name).await;
    connect(addr, client, name).await
}

fn cache_for(ca_pem: &str, key_pem: &str) -> Arc<LeafCache> {
    let ca = CertAuthority::from_pem(ca_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    Arc::new(LeafCache::new(
        ca,
        100,
        Duration::from_secs(72 * H),
        Default::default(),
    ))
}

fn parse<'a>(der: &'a CertificateDer<'a>) -> X509Certificate<'a> {
    X509Certificate::from_der(der).unwrap().1
}

// ---------------------------------------------------------------- CA loading

#[tokio::test]
async fn loads_every_key_type_and_format_and_serves_leaves() {
    type Encode = fn(&KeyPair) -> String;
    let cases: Vec<(&str, &'static SignatureAlgorithm, Encode)> = vec![
        ("rsa pkcs1", &PKCS_RSA_SHA256, rsa_pkcs1_pem),
        ("rsa pkcs8", &PKCS_RSA_SHA256, KeyPair::serialize_pem),
        ("p256 sec1", &PKCS_ECDSA_P256_SHA256, ec_sec1_pem),
        (
            "p256 pkcs8",
            &PKCS_ECDSA_P256_SHA256,
            KeyPair::serialize_pem,
        ),
        ("p384 sec1", &PKCS_ECDSA_P384_SHA384, ec_sec1_pem),
        (
            "p384 pkcs8",
            &PKCS_ECDSA_P384_SHA384,
            KeyPair::serialize_pem,
        ),
        ("ed25519 pkcs8", &PKCS_ED25519, KeyPair::serialize_pem),
    ];
    let dir = TempDir::new();
    for (label, alg, encode) in cases {
        let (ca_der, ca_pem, key) = test_ca(alg);
        let key_pem = encode(&key);
        let cert_path = dir.write(&format!("{label}.crt"), ca_pem.as_bytes());
        let key_path = dir.write(&format!("{label}.key"), key_pem.as_bytes());
        let ca =
            CertAuthority::load(&cert_path, &key_path).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(ca.certificate(), &ca_der, "{label}");
        let cache = Arc::new(LeafCache::new(
            ca,
            10,
            Duration::from_secs(H),
            Default::default(),
        ));
        let hs = handshake_with(
            &cache,
            client_trusting(&[ca_der], &[b"http/1.1"]),
            "example.com",
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: handshake: {e}"));
        assert_eq!(hs.peer_certs.len(), 2, "{label}: leaf + CA");
    }
}

#[tokio::test]
async fn chain_file_with_intermediate_verifies_to_the_root() {
    let root_key = gen_key(&PKCS_ECDSA_P384_SHA384);
    let root_params = ca_params("test root", 1);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let inter_key = gen_key(&PKCS_RSA_SHA256);
    let inter = ca_params("test intermediate", 0)
        .signed_by(&inter_key, &root_issuer)
        .unwrap();

    // Signing CA first, then the rest of the chain.
    let chain_pem = format!("{}{}", inter.pem(), root.pem());
    let cache = cache_for(&chain_pem, &inter_key.serialize_pem());
    assert_eq!(cache.authority().chain().len(), 2);

    let client = client_trusting(&[root.der().clone()], &[b"http/1.1"]);
    let hs = handshake_with(&cache, client, "api.example.com")
        .await
        .unwrap();
    assert_eq!(hs.peer_certs.len(), 3);
    assert_eq!(&hs.peer_certs[1], inter.der());
    assert_eq!(&hs.peer_certs[2], root.der());

    // Trusting only the intermediate's parent is what made that work: a client trusting an
    // unrelated CA refuses the same server.
    let (other, _, _) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let refused = handshake_with(&cache, client_trusting(&[other], &[]), "api.example.com").await;
    assert!(refused.is_err());
}

#[test]
fn refuses_certificates_that_cannot_sign() {
    let dir = TempDir::new();
    let key = gen_key(&PKCS_ECDSA_P256_SHA256);
    let key_path = dir.write("ca.key", key.serialize_pem().as_bytes());

    let mut not_ca = CertificateParams::new(vec!["x.example".to_string()]).unwrap();
    not_ca.is_ca = IsCa::NoCa;
    let cert_path = dir.write(
        "leaf.crt",
        not_ca.self_signed(&key).unwrap().pem().as_bytes(),
    );
    let err = CertAuthority::load(&cert_path, &key_path).unwrap_err();
    assert!(matches!(err, TlsError::CaCert { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("leaf.crt") && msg.contains("not a CA"),
        "{msg}"
    );

    let mut no_sign = ca_params("no keyCertSign", 0);
    no_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert_path = dir.write(
        "nosign.crt",
        no_sign.self_signed(&key).unwrap().pem().as_bytes(),
    );
    let msg = CertAuthority::load(&cert_path, &key_path)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("nosign.crt") && msg.contains("keyCertSign"),
        "{msg}"
    );
}

#[test]
fn load_errors_name_the_file_and_the_reason() {
    let dir = TempDir::new();
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let cert_path = dir.write("ca.crt", ca_pem.as_bytes());
    let key_path = dir.write("ca.key", key.serialize_pem().as_bytes());
    let load = |c: &Path, k: &Path| CertAuthority::load(c, k).unwrap_err().to_string();

    let missing = dir.path().join("missing.crt");
    let msg = load(&missing, &key_path);
    assert!(
        msg.contains("missing.crt") && msg.contains("No such file"),
        "{msg}"
    );

    let garbage = dir.write("garbage.crt", b"hello, not pem\n");
    let msg = load(&garbage, &key_path);
    assert!(
        msg.contains("garbage.crt") && msg.contains("no PEM CERTIFICATE"),
        "{msg}"
    );

    let msg = load(&cert_path, &cert_path);
    assert!(
        msg.contains("CA key") && msg.contains("no unencrypted private key"),
        "{msg}"
    );

    let other = gen_key(&PKCS_ECDSA_P256_SHA256);
    let other_path = dir.write("other.key", other.serialize_pem().as_bytes());
    let err = CertAuthority::load(&cert_path, &other_path).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("other.key"));

    let rsa = gen_key(&PKCS_RSA_SHA256);
    let rsa_path = dir.write("rsa.key", rsa.serialize_pem().as_bytes());
    assert!(matches!(
        CertAuthority::load(&cert_path, &rsa_path).unwrap_err(),
        TlsError::KeyMismatch { .. }
    ));
}

// ---------------------------------------------------------------- leaves

#[tokio::test]
async fn leaf_for_a_dns_name_has_the_documented_shape() {
    let (ca_der, ca_pem, key) = test_ca(&PKCS_ED25519);
    let ca = CertAuthority::from_pem(ca_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let cache = Arc::new(LeafCache::new(
        ca,
        10,
        Duration::from_secs(72 * H),
        Default::default(),
    ));
    let hs = handshake_with(
        &cache,
        client_trusting(std::slice::from_ref(&ca_der), &[b"http/1.1"]),
        "www.example.com",
    )
    .await
    .unwrap();
    assert_eq!(hs.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(hs.peer_certs[1], ca_der);

    let leaf = parse(&hs.peer_certs[0]);
    let spki = &leaf.tbs_certificate.subject_pki;
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);

    let cn: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["www.example.com"]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        [GeneralName::DNSName("www.example.com")]
    );

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert!(
        (now - 65..=now - 55).contains(&nb),
        "not_before {nb} vs now {now}"
    );
    let want = now + 72 * 3600;
    assert!(
        (want - 5..=want + 5).contains(&na),
        "not_after {na} vs {want}"
    );

    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && !eku.value.client_auth);
    assert!(!leaf.is_ca());
    assert!(leaf.raw_serial().len() >= 15, "random 128-bit serial");
    assert_eq!(leaf.issuer(), parse(&ca_der).subject());
}

#[tokio::test]
async fn leaf_for_an_ip_literal_has_an_ip_san() {
    let (ca_der, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let cache = cache_for(&ca_pem, &key.serialize_pem());
    // rustls sends no SNI for an IP address; the server falls back to the given name.
    let hs = handshake_with(
        &cache,
        client_trusting(&[ca_der], &[b"http/1.1"]),
        "127.0.0.1",
    )
    .await
    .unwrap();
    let leaf = parse(&hs.peer_certs[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        [GeneralName::IPAddress(&[127, 0, 0, 1])]
    );

    // Bracketed and canonicalised IPv6 forms share one entry.
    let a = cache.server_config("[::1]").await.unwrap();
    let b = cache.server_config("0:0::1").await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[tokio::test]
async fn names_are_case_insensitive_and_ignore_one_trailing_dot() {
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let cache = cache_for(&ca_pem, &key.serialize_pem());
    let a = cache.server_config("Example.COM.").await.unwrap();
    let b = cache.server_config("example.com").await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(cache.mint_count(), 1);

    // Names longer than X.509's 64-character CN bound still mint (iron-proxy does the same).
    let long = format!("{0}.{0}.{0}.example", "x".repeat(60));
    cache.server_config(&long).await.unwrap();

    for bad in ["", ".", "exa mple.com", "a..b", "ex\u{e4}mple.com"] {
        let err = cache.server_config(bad).await.unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(cache.mint_count(), 2);
}

#[tokio::test]
async fn alpn_is_configurable_and_sessions_resume_across_re_mints() {
    let (ca_der, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let ca = CertAuthority::from_pem(ca_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    // Capacity 1: the second name evicts the first, which is then minted again.
    let cache = Arc::new(
        LeafCache::new(ca, 1, Duration::from_secs(H), Default::default())
            .with_alpn(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
    );
    let client = client_trusting(&[ca_der], &[b"h2", b"http/1.1"]);

    let first = handshake_with(&cache, Arc::clone(&client), "a.example")
        .await
        .unwrap();
    assert_eq!(first.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(first.kind, Some(HandshakeKind::Full));
    handshake_with(&cache, Arc::clone(&client), "b.example")
        .await
        .unwrap();
    let again = handshake_with(&cache, client, "a.example").await.unwrap();
    assert_eq!(cache.mint_count(), 3, "a was evicted and minted again");
    assert_eq!(again.kind, Some(HandshakeKind::Resumed));
}

// ---------------------------------------------------------------- cache

#[tokio::test]
async fn lru_evicts_the_least_recently_used_name() {
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let ca = CertAuthority::from_pem(ca_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let cache = LeafCache::new(ca, 2, Duration::from_secs(H), Default::default());

    let a = cache.server_config("a.example").await.unwrap();
    cache.server_config("b.example").await.unwrap();
    // Touch a, so b is the least recently used when c arrives.
    assert!(Arc::ptr_eq(
        &a,
        &cache.server_config("a.example").await.unwrap()
    ));
    cache.server_config("c.example").await.unwrap();
    assert_eq!((cache.len(), cache.mint_count()), (2, 3));

    assert!(Arc::ptr_eq(
        &a,
        &cache.server_config("a.example").await.unwrap()
    ));
    assert_eq!(cache.mint_count(), 3);
    cache.server_config("b.example").await.unwrap();
    assert_eq!(cache.mint_count(), 4, "b had been evicted");
}

#[tokio::test]
async fn entries_expire_before_their_leaf() {
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let ca = CertAuthority::from_pem(ca_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    // Entry lifetime: validity minus min(1h, validity/4) = 1.5 s.
    let cache = LeafCache::new(ca, 10, Duration::from_secs(2), Default::default());

    let first = cache.server_config("a.example").await.unwrap();
    assert!(Arc::ptr_eq(
        &first,
        &cache.server_config("a.example").await.unwrap()
    ));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let second = cache.server_config("a.example").await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(cache.mint_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_mint_once() {
    let (_, ca_pem, key) = test_ca(&PKCS_RSA_SHA256); // slow signer widens the race window
    let cache = cache_for(&ca_pem, &key.serialize_pem());
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let cache = Arc::clone(&cache);
            let barrier = Arc::clone(&barrier);
            // Mixed spellings of one name all share the flight.
            let name = if i % 2 == 0 {
                "same.example"
            } else {
                "SAME.example."
            };
            tokio::spawn(async move {
                barrier.wait().await;
                cache.server_config(name).await.unwrap()
            })
        })
        .collect();
    let mut configs = Vec::new();
    for t in tasks {
        configs.push(t.await.unwrap());
    }
    assert_eq!(cache.mint_count(), 1);
    assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn a_cancelled_mint_is_taken_over_by_the_next_request() {
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let cache = cache_for(&ca_pem, &key.serialize_pem());
    // Dropping the future right after its first poll abandons the mint.
    let fut = cache.server_config("x.example");
    let _ = tokio::time::timeout(Duration::ZERO, fut).await;
    let config = cache.server_config("x.example").await.unwrap();
    assert!(Arc::ptr_eq(
        &config,
        &cache.server_config("x.example").await.unwrap()
    ));
}

#[test]
fn mint_benchmark_reports_a_mean() {
    let mean = mint_benchmark(50).unwrap();
    eprintln!("mean cache-miss mint: {mean:?}");
    assert!(mean > Duration::ZERO && mean < Duration::from_millis(100));
}

// ---------------------------------------------------------------- generate-ca

#[test]
fn generate_ca_writes_a_usable_ca_for_every_algorithm() {
    let dir = TempDir::new();
    for alg in CaAlgorithm::ALL {
        assert_eq!(alg.as_str().parse::<CaAlgorithm>().unwrap(), alg);
        let outdir = dir.path().join(alg.as_str()).join("nested");
        let opts = GenerateCaOptions {
            outdir: outdir.clone(),
            name: format!("gen {alg}"),
            expiry_hours: 48,
            alg,
        };
        let written = generate_ca(&opts).unwrap();
        assert_eq!(written.cert_path, outdir.join("ca.crt"));
        assert_eq!(written.key_path, outdir.join("ca.key"));

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&written.cert_path), 0o644, "{alg}");
        assert_eq!(mode(&written.key_path), 0o600, "{alg}");
        assert_eq!(mode(&outdir), 0o755, "{alg}");
        let key_pem = std::fs::read_to_string(&written.key_path).unwrap();
        assert!(
            key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{alg}: PKCS#8"
        );

        let cert_pem = std::fs::read(&written.cert_path).unwrap();
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(&cert_pem).unwrap();
        let cert = parse(&cert_der);
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(
            bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(0),
            "{alg}"
        );
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(
            ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign(),
            "{alg}"
        );
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cn, [format!("gen {alg}")]);
        assert_eq!(cert.subject(), cert.issuer());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        assert!((now - 65..=now - 55).contains(&nb), "{alg}");
        assert!(
            (now + 48 * 3600 - 5..=now + 48 * 3600 + 5).contains(&na),
            "{alg}"
        );
        assert!(cert.raw_serial().len() >= 15, "{alg}");

        // What generate-ca writes, the proxy loads.
        let ca = CertAuthority::load(&written.cert_path, &written.key_path).unwrap();
        let _ = LeafCache::new(ca, 1, Duration::from_secs(H), Default::default());
    }
}

#[test]
fn generate_ca_never_overwrites() {
    let dir = TempDir::new();
    let opts = GenerateCaOptions {
        outdir: dir.path().to_path_buf(),
        ..Default::default()
    };
    assert_eq!(opts.alg, CaAlgorithm::EcdsaP256);
    assert_eq!(
        (opts.name.as_str(), opts.expiry_hours),
        ("iron-agent CA", 2160)
    );

    let written = generate_ca(&opts).unwrap();
    let before = std::fs::read(&written.cert_path).unwrap();
    let err = generate_ca(&opts).unwrap_err();
    assert!(matches!(err, TlsError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("ca.crt"), "{err}");
    assert_eq!(std::fs::read(&written.cert_path).unwrap(), before);

    // Only the key exists: refused, naming it, and no certificate is left behind.
    std::fs::remove_file(&written.cert_path).unwrap();
    let err = generate_ca(&opts).unwrap_err();
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert!(!written.cert_path.exists());

    assert!("rsa2048".parse::<CaAlgorithm>().is_err());
    let zero = GenerateCaOptions {
        outdir: dir.path().join("zero"),
        expiry_hours: 0,
        ..Default::default()
    };
    assert!(matches!(
        generate_ca(&zero),
        Err(TlsError::InvalidOption(_))
    ));
    assert!(!zero.outdir.exists(), "nothing created for invalid options");
}

// ---------------------------------------------------------------- upstream client

#[test]
fn upstream_roots_combine_system_store_and_extra_files() {
    let dir = TempDir::new();
    let (ca_der, ca_pem, _) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let file = dir.write("extra.pem", ca_pem.as_bytes());

    let only_file = UpstreamRoots {
        files: vec![file.clone()],
        ..Default::default()
    };
    assert_eq!(only_file.load().unwrap().len(), 1);

    let sub = dir.path().join("certs");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("a.pem"), ca_pem.as_bytes()).unwrap();
    let file_and_dir = UpstreamRoots {
        files: vec![file],
        dirs: vec![sub],
        extra: vec![ca_der],
        ..Default::default()
    };
    assert_eq!(file_and_dir.load().unwrap().len(), 1, "duplicates collapse");

    let nothing = UpstreamRoots {
        files: vec![dir.path().join("absent.pem")],
        ..Default::default()
    };
    assert!(matches!(nothing.load(), Err(TlsError::NoRoots)));
}

const CHILD_MARKER: &str = "IRON_AGENT_TLS_TEST_CHILD";

/// Runs `child_upstream_client_trusts_ssl_cert_file` in a child process with `SSL_CERT_FILE`
/// set, so this process's environment is never touched.
#[test]
fn upstream_client_config_trusts_ssl_cert_file() {
    let dir = TempDir::new();
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let cert = dir.write("ca.crt", ca_pem.as_bytes());
    let key = dir.write("ca.key", key.serialize_pem().as_bytes());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &iron_agent_tests::test_name(
                module_path!(),
                "child_upstream_client_trusts_ssl_cert_file",
            ),
            "--nocapture",
        ])
        .env(CHILD_MARKER, &key)
        .env("SSL_CERT_FILE", &cert)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn child_upstream_client_trusts_ssl_cert_file() {
    let Some(key_path) = std::env::var_os(CHILD_MARKER) else {
        return; // only meaningful inside the child process spawned above
    };
    let cert_path = PathBuf::from(std::env::var_os("SSL_CERT_FILE").unwrap());
    let ca = CertAuthority::load(&cert_path, Path::new(&key_path)).unwrap();
    let cache = Arc::new(LeafCache::new(
        ca,
        10,
        Duration::from_secs(H),
        Default::default(),
    ));

    let client = upstream_client_config().unwrap();
    // HTTP/2 first: the agent speaks h2 to upstreams that negotiate it.
    assert_eq!(
        client.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let hs = handshake_with(&cache, client, "upstream.example")
        .await
        .unwrap();
    assert_eq!(hs.alpn.as_deref(), Some(&b"h2"[..]));

    // The variable adds to the system store rather than replacing it.
    let roots = UpstreamRoots::from_env().load().unwrap();
    let system = UpstreamRoots {
        system: true,
        ..Default::default()
    }
    .load()
    .map(|s| s.len())
    .unwrap_or(0);
    assert_eq!(roots.len(), system + 1);
}

#[tokio::test]
async fn upstream_client_refuses_an_untrusted_ca() {
    let (_, ca_pem, key) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let cache = cache_for(&ca_pem, &key.serialize_pem());
    let (unrelated, _, _) = test_ca(&PKCS_ECDSA_P256_SHA256);
    let err = handshake_with(
        &cache,
        client_trusting(&[unrelated], &[b"http/1.1"]),
        "example.com",
    )
    .await
    .err()
    .expect("handshake must fail");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}
