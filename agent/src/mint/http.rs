//! The agent's own HTTP client for token endpoints and the metadata server.
//!
//! Not the workload data path: no transform pipeline. Calls dial through the agent's
//! [`Connector`] (the configured resolver, `proxy.upstream_proxy` and the proxy environment
//! variables, the upstream TLS roots) like iron-proxy's token calls go through Go's default
//! transport, but without `upstream_deny_cidrs`: the endpoints are operator configuration, and
//! the metadata server lives on 169.254.169.254. Metadata-server calls are always direct. Every call is bounded by [`CALL_TIMEOUT`],
//! responses by [`MAX_BODY`], and errors name the endpoint (without its query) but never a
//! value sent or received.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::MintError;
pub use super::response::{TokenReply, parse_id_token_response, parse_token_response};
use crate::message::header_case::{self, ConfiguredCasing};
use crate::resolve::Resolver;
use crate::secrets::SecretValue;
use crate::upstream::{Connector, DenyList};

/// One token or metadata call, connect to last body byte.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Token responses are a few hundred bytes; anything near this is not one.
const MAX_BODY: usize = 1 << 20;
const USER_AGENT: &str = concat!("iron-agent/", env!("CARGO_PKG_VERSION"));

type HttpClient = Client<Connector, Full<Bytes>>;

/// A raw token-endpoint answer: status, lower-cased content type, body.
pub type RawReply = (StatusCode, Option<String>, Bytes);

/// The agent's HTTP/1.1 clients for token calls, built from the connector handed in: through
/// the upstream proxies (token endpoints), and direct (the metadata server, which Google's
/// libraries never reach through a proxy either). Shared by every credential transform.
pub struct TokenHttp {
    clients: Option<Clients>,
}

struct Clients {
    proxied: HttpClient,
    direct: HttpClient,
}

/// The error of a [`TokenHttp::detached`] client: a dry run (`iron-agent policy test`) finds
/// it in a trace to tell "would call a service" from a real failure.
pub const NOT_CONTACTED: &str =
    "not contacted: token client is detached (configuration check or dry run)";

/// `scheme://host/path` of a URL, for error messages (a query could carry a key).
pub fn display_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn client(connector: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http1_preserve_header_case(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

impl TokenHttp {
    /// Token calls dial through `connector` (the agent's resolver, upstream proxies and TLS
    /// roots), minus its deny list.
    pub fn new(connector: &Connector) -> Self {
        let c = connector.without_deny_list().http1_only();
        Self {
            clients: Some(Clients {
                direct: client(c.without_upstream_proxies()),
                proxied: client(c),
            }),
        }
    }

    /// A client of its own: the system resolver, no upstream proxy, the upstream TLS roots.
    /// For tools and tests that run transforms outside the agent.
    pub fn standalone() -> Result<Self, MintError> {
        let setup = |reason: String| MintError::Invalid(format!("token client setup: {reason}"));
        let resolver = Resolver::new(None).map_err(|e| setup(format!("resolver: {e}")))?;
        let tls = crate::tls::upstream_client_config().map_err(|e| setup(format!("TLS: {e}")))?;
        Ok(Self::new(&Connector::new(
            Arc::new(resolver),
            DenyList::new(Vec::new()),
            tls,
        )))
    }

    /// A client that refuses every call: for pipelines built only to check a config.
    pub fn detached() -> Self {
        Self { clients: None }
    }

    /// Sends `req` and reads the whole response within [`CALL_TIMEOUT`].
    async fn send(
        &self,
        endpoint: &str,
        req: Request<Full<Bytes>>,
        direct: bool,
    ) -> Result<RawReply, MintError> {
        let transport = |reason: String| MintError::Transport {
            endpoint: display_url(endpoint).into(),
            reason,
        };
        let clients = self
            .clients
            .as_ref()
            .ok_or_else(|| transport(NOT_CONTACTED.into()))?;
        let client = if direct {
            &clients.direct
        } else {
            &clients.proxied
        };
        let call = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| transport(crate::telemetry::error_chain(&e)))?;
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
    ) -> Result<RawReply, MintError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.post_encoded(endpoint, Bytes::from(body), headers)
            .await
    }

    /// POSTs an already encoded form body the way golang.org/x/oauth2 does: form content type,
    /// JSON accepted, our user agent, and `headers` with exactly the configured name casing.
    pub async fn post_encoded(
        &self,
        endpoint: &str,
        body: Bytes,
        headers: &[(String, SecretValue)],
    ) -> Result<RawReply, MintError> {
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
            .body(Full::new(body))
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
        self.send(endpoint, req, false).await
    }

    /// GET with extra headers, dialled directly (the metadata server); returns the status and
    /// body.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Result<RawReply, MintError> {
        let mut b = Request::get(url).header(header::USER_AGENT, USER_AGENT);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| MintError::Invalid(format!("request to {}: {e}", display_url(url))))?;
        self.send(url, req, true).await
    }
}

impl TokenHttp {
    /// POSTs a JSON body (an LLM API call of the `judge` transform) with `headers`; returns the
    /// status, content type and body unparsed. Header values may be credentials: errors name
    /// the header only.
    pub async fn post_json(
        &self,
        endpoint: &str,
        body: Bytes,
        headers: &[(&'static str, SecretValue)],
    ) -> Result<RawReply, MintError> {
        let invalid = |reason: String| {
            MintError::Invalid(format!("request to {}: {reason}", display_url(endpoint)))
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(body))
            .map_err(|e| invalid(format!("invalid URL: {e}")))?;
        for (name, value) in headers {
            let v = HeaderValue::from_str(value.expose()).map_err(|_| {
                invalid(format!(
                    "value of header {name} is not a valid header value"
                ))
            })?;
            req.headers_mut().insert(HeaderName::from_static(name), v);
        }
        self.send(endpoint, req, false).await
    }
}
