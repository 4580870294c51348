//! The connection to the TransformService: dial target, TLS / mTLS, deadlines. Everything that
//! can be checked (target syntax, certificate files) is checked when the pipeline is built, so a
//! bad config fails at startup naming the field; the channel itself connects lazily, on the
//! first call, and reconnects by itself after the service restarts.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::proto::transform_service_client::TransformServiceClient;
use crate::config::transforms::GrpcTlsConfig;
use crate::transform::build::{BuildProblem, TransformBuildError};

pub struct Client {
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
}

impl Client {
    pub fn new(
        target: &str,
        tls: &GrpcTlsConfig,
        timeout: Duration,
    ) -> Result<Self, TransformBuildError> {
        let uri = target_uri(target, tls.enabled).ok_or_else(|| {
            TransformBuildError::invalid("target", "is not a host:port dial target")
        })?;
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|_| TransformBuildError::invalid("target", "is not a host:port dial target"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        if tls.enabled {
            endpoint = endpoint.tls_config(tls_config(tls)?).map_err(|_| {
                TransformBuildError::invalid(
                    "tls",
                    "cannot build a TLS client from these certificates",
                )
            })?;
        }
        Ok(Self {
            endpoint,
            channel: OnceLock::new(),
        })
    }

    /// A client on the shared channel (created on first use: it needs the runtime).
    pub fn get(&self) -> TransformServiceClient<Channel> {
        let channel = self.channel.get_or_init(|| self.endpoint.connect_lazy());
        TransformServiceClient::new(channel.clone())
    }
}

/// A gRPC dial target (`host:port`, `dns:///host:port`, or an `http(s)://` URL) as a URI with
/// the scheme `tls.enabled` asks for.
fn target_uri(target: &str, tls: bool) -> Option<String> {
    let t = target.trim();
    let t = t.strip_prefix("dns:///").unwrap_or(t);
    let authority = match t.split_once("://") {
        Some(("http" | "https", rest)) => rest.trim_end_matches('/'),
        Some(_) => return None,
        None => t,
    };
    let parsed: http::uri::Authority = authority.parse().ok()?;
    parsed.port_u16()?;
    if parsed.host().is_empty() || authority.contains('/') {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    Some(format!("{scheme}://{authority}"))
}

fn tls_config(tls: &GrpcTlsConfig) -> Result<ClientTlsConfig, TransformBuildError> {
    let mut cfg = ClientTlsConfig::new();
    cfg = match &tls.ca_cert {
        Some(path) => cfg.ca_certificate(Certificate::from_pem(read_pem(path, "tls.ca_cert")?)),
        None => cfg.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let cert = read_pem(cert, "tls.cert")?;
        let key = read_pem(key, "tls.key")?;
        cfg = cfg.identity(Identity::from_pem(cert, key));
    }
    Ok(cfg)
}

/// Reads a PEM file and checks it holds what the field needs, so a wrong file is reported at
/// startup rather than as a failed handshake on the first request.
fn read_pem(path: &Path, field: &'static str) -> Result<Vec<u8>, TransformBuildError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let pem = std::fs::read(path).map_err(|source| {
        TransformBuildError::new(
            field,
            BuildProblem::Read {
                path: path.to_path_buf(),
                source,
            },
        )
    })?;
    let ok = if field == "tls.key" {
        PrivateKeyDer::from_pem_slice(&pem).is_ok()
    } else {
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .is_some_and(|c| c.is_ok())
    };
    if ok {
        Ok(pem)
    } else if field == "tls.key" {
        Err(TransformBuildError::invalid(
            field,
            "holds no PEM private key",
        ))
    } else {
        Err(TransformBuildError::invalid(
            field,
            "holds no PEM certificate",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::target_uri;

    #[test]
    fn dial_targets() {
        assert_eq!(
            target_uri("localhost:9500", false).as_deref(),
            Some("http://localhost:9500")
        );
        assert_eq!(
            target_uri("dns:///svc.local:443", true).as_deref(),
            Some("https://svc.local:443")
        );
        assert_eq!(
            target_uri("http://127.0.0.1:1/", false).as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            target_uri("[::1]:9", false).as_deref(),
            Some("http://[::1]:9")
        );
        for bad in ["localhost", "unix:///tmp/s", "a:b", "host:1/path", ":9"] {
            assert_eq!(target_uri(bad, false), None, "{bad}");
        }
    }
}
