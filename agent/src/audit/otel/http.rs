//! The OTLP/HTTP exporter's client: hyper with rustls (the agent's TLS stack and upstream
//! roots), instead of the reqwest client the exporter would otherwise bring.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};

use super::OtelError;

/// A collector's answer is a small protobuf message; anything bigger is not one.
const MAX_RESPONSE: usize = 1 << 20;

pub struct OtlpHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtlpHttpClient")
    }
}

impl OtlpHttpClient {
    pub fn new() -> Result<Self, OtelError> {
        let tls = crate::tls::upstream_client_config()
            .map_err(|e| OtelError::Build(format!("TLS setup: {e}")))?;
        let mut tls = (*tls).clone();
        // hyper-rustls sets ALPN itself and refuses a config that already has some.
        tls.alpn_protocols.clear();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

#[async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}
