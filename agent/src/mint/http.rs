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
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::MintError;
use crate::proxy::header_case::{self, ConfiguredCasing};
use crate::secrets::SecretValue;

/// One token or metadata call, connect to last body byte.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Token responses are a few hundred bytes; anything near this is not one.
const MAX_BODY: usize = 1 << 20;
const USER_AGENT: &str = concat!("iron-agent/", env!("CARGO_PKG_VERSION"));

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A successful token response.
pub struct TokenReply {
    pub access_token: SecretValue,
    pub expires_in: Option<Duration>,
    /// A rotated refresh token, when the endpoint issued one.
    pub refresh_token: Option<SecretValue>,
}

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

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Parses an RFC 6749 §5.1/§5.2 response: JSON, or the form encoding some providers use.
pub fn parse_token_response(
    endpoint: &str,
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenReply, MintError> {
    let is_form = content_type.is_some_and(|c| {
        c.starts_with("application/x-www-form-urlencoded") || c.starts_with("text/plain")
    });
    let raw = if is_form {
        let mut r = Raw {
            access_token: None,
            expires_in: None,
            refresh_token: None,
            error: None,
        };
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "access_token" => r.access_token = Some(v.into_owned()),
                "expires_in" => r.expires_in = Some(serde_json::Value::String(v.into_owned())),
                "refresh_token" => r.refresh_token = Some(v.into_owned()),
                "error" => r.error = Some(v.into_owned()),
                _ => {}
            }
        }
        Some(r)
    } else {
        serde_json::from_slice::<Raw>(body).ok()
    };
    let code = raw
        .as_ref()
        .and_then(|r| r.error.as_deref())
        .filter(|c| !c.is_empty())
        .map(sanitize_code);
    if !status.is_success() {
        return Err(status_error(endpoint, status, code));
    }
    let bad = |reason: &str| MintError::BadResponse {
        endpoint: endpoint.into(),
        reason: reason.into(),
    };
    let raw = raw.ok_or_else(|| bad("response is not a JSON token response"))?;
    if let Some(code) = code {
        return Err(MintError::OAuth {
            endpoint: endpoint.into(),
            status: status.as_u16(),
            code,
        });
    }
    let token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("response has no access_token"))?;
    if HeaderValue::from_str(&token).is_err() {
        return Err(bad("access_token is not a valid header value"));
    }
    let expires_in = match raw.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    // Like golang.org/x/oauth2: zero or absent means "no known expiry".
    .filter(|s| s.is_finite() && *s > 0.0)
    .map(|s| Duration::from_secs_f64(s.min(1e9)));
    Ok(TokenReply {
        access_token: SecretValue::new(token),
        expires_in,
        refresh_token: raw
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(SecretValue::new),
    })
}

/// The error for a non-success token response: the OAuth `error` code when there is one.
fn status_error(endpoint: &str, status: StatusCode, code: Option<String>) -> MintError {
    match code {
        Some(code) => MintError::OAuth {
            endpoint: endpoint.into(),
            status: status.as_u16(),
            code,
        },
        None => MintError::Status {
            endpoint: endpoint.into(),
            status: status.as_u16(),
        },
    }
}

#[derive(Deserialize)]
struct RawId {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Parses Google's ID-token response (`{"id_token": "<jwt>"}`); the token's lifetime is its
/// `exp` claim, as golang.org/x/oauth2/google reads it.
pub fn parse_id_token_response(
    endpoint: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<TokenReply, MintError> {
    let raw = serde_json::from_slice::<RawId>(body).ok();
    let code = raw
        .as_ref()
        .and_then(|r| r.error.as_deref())
        .filter(|c| !c.is_empty())
        .map(sanitize_code);
    if !status.is_success() || code.is_some() {
        return Err(status_error(endpoint, status, code));
    }
    let bad = |reason: &str| MintError::BadResponse {
        endpoint: endpoint.into(),
        reason: reason.into(),
    };
    let token = raw
        .and_then(|r| r.id_token)
        .filter(|t| !t.is_empty() && HeaderValue::from_str(t).is_ok())
        .ok_or_else(|| bad("response has no usable id_token"))?;
    let exp = jwt_exp(&token).ok_or_else(|| bad("id_token has no readable exp claim"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(TokenReply {
        access_token: SecretValue::new(token),
        // An already expired token still gets a tiny lifetime, so it is re-minted at once.
        expires_in: Some(Duration::from_secs(exp.saturating_sub(now).max(1))),
        refresh_token: None,
    })
}

/// The `exp` claim of a JWT, read without verifying it (it comes from the token endpoint).
fn jwt_exp(jwt: &str) -> Option<u64> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// OAuth error codes are `[\x20-\x21\x23-\x5B\x5D-\x7E]+` (RFC 6749 §5.2); anything else, or an
/// oversized one, is not echoed into logs.
fn sanitize_code(c: &str) -> String {
    if c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        c.to_string()
    } else {
        "invalid_error_code".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_and_form_and_errors() {
        let r = parse_token_response(
            "e",
            StatusCode::OK,
            Some("application/json"),
            br#"{"access_token":"a","expires_in":"120","refresh_token":"r2"}"#,
        )
        .unwrap();
        assert_eq!(r.access_token.expose(), "a");
        assert_eq!(r.expires_in, Some(Duration::from_secs(120)));
        assert_eq!(r.refresh_token.unwrap().expose(), "r2");
        let r = parse_token_response(
            "e",
            StatusCode::OK,
            Some("application/x-www-form-urlencoded"),
            b"access_token=b&expires_in=0",
        )
        .unwrap();
        assert_eq!(r.access_token.expose(), "b");
        assert_eq!(r.expires_in, None);
        let e = parse_token_response(
            "e",
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error":"invalid_grant","error_description":"x"}"#,
        )
        .err()
        .unwrap();
        assert_eq!(e.reason(), "invalid_grant");
        let e = parse_token_response("e", StatusCode::BAD_GATEWAY, None, b"<html>")
            .err()
            .unwrap();
        assert_eq!(e.reason(), "token_endpoint_http_502");
        let e = parse_token_response("e", StatusCode::OK, None, br#"{"token_type":"x"}"#)
            .err()
            .unwrap();
        assert_eq!(e.reason(), "token_endpoint_error");
    }
}
