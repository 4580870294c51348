//! Pooled upstream HTTP client with the response-header timeout. HTTP/2 is used when the
//! upstream chose it by ALPN (the connector reports it), HTTP/1.1 otherwise; h2 connections
//! are shared by concurrent requests to the same authority.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::connect::Connector;
use super::error::UpstreamError;
use crate::message::ProxyBody;

pub struct UpstreamClient {
    client: Client<Connector, ProxyBody>,
    header_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(connector: Connector, header_timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http1_preserve_header_case(true)
            .http1_title_case_headers(false)
            // The agent forwards the client's Host header itself.
            .set_host(false)
            .build(connector);
        Self {
            client,
            header_timeout,
        }
    }

    /// How long to wait for an upstream's response headers.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    pub async fn send(
        &self,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.header_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::HeaderTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Exchange(e)),
        }
    }
}
