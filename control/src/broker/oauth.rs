//! The refresh request: RFC 6749 §6 (`grant_type=refresh_token`) against the credential's
//! token endpoint, and the classification of its answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::Job;

/// Largest token response read.
const MAX_RESPONSE: usize = 256 * 1024;

/// OAuth error codes after which retrying with the same refresh token cannot succeed.
const FATAL: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
];

pub struct Minted {
    pub access_token: String,
    pub expires_in: Option<i64>,
    pub refresh_token: Option<String>,
}

pub enum Outcome {
    Token(Minted),
    /// Unrecoverable: the reason (an OAuth error code) is recorded as `dead_reason`.
    Dead(String),
    /// Retryable (network, timeout, 5xx, 429, malformed answer); never includes a token.
    Retry(String),
}

pub struct TokenClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[derive(Debug, thiserror::Error)]
#[error("loading the system trust roots: {0}")]
pub struct ClientError(#[from] std::io::Error);

impl TokenClient {
    pub fn new() -> Result<Self, ClientError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    pub(super) async fn refresh(&self, job: &Job) -> Outcome {
        let timeout = Duration::from_secs(job.params.timeout_s.max(1) as u64);
        match tokio::time::timeout(timeout, self.post(job)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry(format!(
                "token endpoint did not answer within {}s",
                timeout.as_secs()
            )),
        }
    }

    async fn post(&self, job: &Job) -> Outcome {
        let req = match request(job) {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("building the token request: {e}")),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("token endpoint unreachable: {e}")),
        };
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Outcome::Retry(format!("reading the token response: {e}")),
        };
        classify(status, &bytes)
    }
}

fn request(job: &Job) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token");
    form.append_pair("refresh_token", &job.refresh_token);
    form.append_pair("client_id", &job.params.client_id);
    if let Some(s) = &job.client_secret {
        form.append_pair("client_secret", s);
    }
    if !job.params.scopes.is_empty() {
        form.append_pair("scope", &job.params.scopes.join(" "));
    }
    let mut req = http::Request::post(&job.params.token_endpoint)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    for (k, v) in &job.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(Full::new(Bytes::from(form.finish())))
}

/// Classifies a token endpoint answer. Messages name the status and OAuth error code only.
pub fn classify(status: http::StatusCode, body: &[u8]) -> Outcome {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        let token = json
            .as_ref()
            .and_then(|j| j.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Outcome::Retry(format!(
                "token endpoint answered {status} without an access_token"
            ));
        };
        let j = json.as_ref();
        let expires_in = j.and_then(|j| j.get("expires_in")).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        return Outcome::Token(Minted {
            access_token: token.to_owned(),
            expires_in: expires_in.filter(|e| *e > 0),
            refresh_token: j
                .and_then(|j| j.get("refresh_token"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        });
    }
    let code = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if (status == http::StatusCode::BAD_REQUEST || status == http::StatusCode::UNAUTHORIZED)
        && FATAL.contains(&code)
    {
        return Outcome::Dead(code.to_owned());
    }
    if code.is_empty() {
        Outcome::Retry(format!("token endpoint answered {status}"))
    } else {
        Outcome::Retry(format!("token endpoint answered {status} ({code})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let ok = classify(
            http::StatusCode::OK,
            br#"{"access_token":"a","expires_in":"60","refresh_token":"r2"}"#,
        );
        assert!(matches!(
            ok,
            Outcome::Token(Minted {
                expires_in: Some(60),
                ..
            })
        ));
        let dead = classify(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant"}"#,
        );
        assert!(matches!(dead, Outcome::Dead(r) if r == "invalid_grant"));
        assert!(matches!(
            classify(http::StatusCode::SERVICE_UNAVAILABLE, b""),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(http::StatusCode::OK, b"{}"),
            Outcome::Retry(_)
        ));
    }
}
