//! The agent's own HTTP client for token endpoints and the metadata server.
//!
//! Not the workload data path: no transform pipeline, no deny list (the metadata server lives
//! on 169.254.169.254). Every call is bounded by [`CALL_TIMEOUT`], responses by
//! [`MAX_BODY`], and errors name the endpoint (without its query) but never a value sent or
//! received.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::OnceCell;

use super::MintError;
pub use super::response::{TokenReply, parse_id_token_response, parse_token_response};
use crate::proxy::header_case::{self, ConfiguredCasing};
use crate::secrets::SecretValue;

/// One token or metadata call, connect to last body byte.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Token responses are a few hundred bytes; anything near this is not one.
const MAX_BODY: usize = 1 << 20;
const USER_AGENT: &str = concat!("iron-agent/", env!("CARGO_PKG_VERSION"));

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Shared, lazily built HTTPS/HTTP client (system roots plus `SSL_CERT_FILE`/`SSL_CERT_DIR`).
pub struct TokenHttp {
    client: OnceCell<HttpClient>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for TokenHttp {
    fn default() -> Self {
        Self::new()
    }
}

/// `scheme://host/path` of a URL, for error messages (a query could carry a key).
pub fn display_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The chain of an error's causes on one line (hyper's top-level errors say little).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl TokenHttp {
    pub fn new() -> Self {
        Self {
            client: OnceCell::new(),
            tls: None,
        }
    }

    /// As [`TokenHttp::new`], trusting exactly `tls`'s roots (tests).
    pub fn with_tls(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            client: OnceCell::new(),
            tls: Some(tls),
        }
    }

    async fn client(&self, endpoint: &str) -> Result<&HttpClient, MintError> {
        self.client
            .get_or_try_init(|| async {
                let tls = match &self.tls {
                    Some(c) => c.clone(),
                    None => {
                        crate::tls::upstream_client_config().map_err(|e| MintError::Transport {
                            endpoint: display_url(endpoint).into(),
                            reason: format!("TLS setup: {e}"),
                        })?
                    }
                };
                let mut tls = (*tls).clone();
                // hyper-rustls sets ALPN itself and refuses a config that already has some.
                tls.alpn_protocols.clear();
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .build();
                Ok(Client::builder(TokioExecutor::new())
                    .http1_preserve_header_case(true)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build(connector))
            })
            .await
    }

    /// Sends `req` and reads the whole response within [`CALL_TIMEOUT`].
    async fn send(
        &self,
        endpoint: &str,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<String>, Bytes), MintError> {
        let transport = |reason: String| MintError::Transport {
            endpoint: display_url(endpoint).into(),
            reason,
        };
        let client = self.client(endpoint).await?;
        let call = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| transport(chain(&e)))?;
            let status = resp.status();
            let ctype = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase);
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| transport(format!("reading response: {e}")))?
                .to_bytes();
            Ok((status, ctype, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| transport(format!("no response within {}s", CALL_TIMEOUT.as_secs())))?
    }

    /// POSTs an `application/x-www-form-urlencoded` token request and parses the reply.
    /// `headers` are sent with exactly the configured name casing.
    pub async fn post_form(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
        headers: &[(String, SecretValue)],
    ) -> Result<TokenReply, MintError> {
        let (status, ctype, body) = self.post_form_raw(endpoint, form, headers).await?;
        parse_token_response(display_url(endpoint), status, ctype.as_deref(), &body)
    }

    /// As [`TokenHttp::post_form`], returning the status, content type and body unparsed.
    pub async fn post_form_raw(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
        headers: &[(String, SecretValue)],
    ) -> Result<(StatusCode, Option<String>, Bytes), MintError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let invalid = |reason: String| {
            MintError::Invalid(format!(
                "token request to {}: {reason}",
                display_url(endpoint)
            ))
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(format!("invalid endpoint URL: {e}")))?;
        for (name, value) in headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
            // The value is a secret: the error names the header only.
            let v = HeaderValue::from_str(value.expose()).map_err(|_| {
                invalid(format!(
                    "value of header {name} is not a valid header value"
                ))
            })?;
            req.headers_mut().insert(n, v);
            ConfiguredCasing::insert(&mut req, name);
        }
        header_case::apply(&mut req)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        self.send(endpoint, req).await
    }

    /// GET with extra headers (metadata server); returns the status and body.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Result<(StatusCode, Option<String>, Bytes), MintError> {
        let mut b = Request::get(url).header(header::USER_AGENT, USER_AGENT);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| MintError::Invalid(format!("request to {}: {e}", display_url(url))))?;
        self.send(url, req).await
    }
}
