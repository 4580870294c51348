//! `POST {url}/api/v1/proxy/enroll`: trades an enrollment token for a proxy token, through the
//! agent's own HTTP client (the same connector rules as the sync call). The enrollment token
//! travels only in the request body; no error carries it or the proxy token.

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::EnrollError;
use crate::managed::client::ErrorEnvelope;
use crate::mint::{MintError, TokenHttp};
use crate::secrets::SecretValue;

/// Path of the enrollment endpoint below the control plane's base URL.
pub const ENROLL_PATH: &str = "/api/v1/proxy/enroll";

/// What the control plane answers to a redeemed token.
pub struct Enrolled {
    /// The new proxy's id (`prx_...`).
    pub id: String,
    /// The long-lived proxy token (`iprx_...`); `Debug` prints `[redacted]`.
    pub token: SecretValue,
    pub tags: Vec<String>,
}

/// One enrollment call (no retries: a refused token stays refused, and a retry after a lost
/// answer could spend a second use of the token).
pub async fn enroll(
    http: &TokenHttp,
    base_url: &str,
    enrollment_token: &SecretValue,
    name: &str,
) -> Result<Enrolled, EnrollError> {
    let endpoint = format!("{}{ENROLL_PATH}", base_url.trim_end_matches('/'));
    let body = serde_json::json!({
        "enrollment_token": enrollment_token.expose(),
        "name": name,
    })
    .to_string();
    let (status, _ctype, body) = http
        .post_json(&endpoint, Bytes::from(body), &[])
        .await
        .map_err(|e| EnrollError::Unreachable {
            url: base_url.to_string(),
            reason: match e {
                MintError::Transport { reason, .. } => reason,
                other => other.to_string(),
            },
        })?;
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return Err(refusal(status, &body));
    }
    parse(&body)
}

/// The answer `{"data":{"id","token","tags"}}` (iron-control), or the same fields at the top.
fn parse(body: &[u8]) -> Result<Enrolled, EnrollError> {
    let bad = |why: &str| EnrollError::Body(why.to_string());
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let d = v.get("data").unwrap_or(&v);
    let token = d
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("no proxy token in the answer"))?;
    if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() || token.contains('\n') {
        return Err(bad(
            "the proxy token has characters not allowed in a header",
        ));
    }
    let tags = d
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Enrolled {
        id: d
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id in the answer)")
            .to_string(),
        token: SecretValue::new(token.to_string()),
        tags,
    })
}

/// A non-success answer: the server's code (`invalid_token`, `token_expired`,
/// `token_exhausted`) picks the message; anything else is reported with its code and status.
fn refusal(status: StatusCode, body: &[u8]) -> EnrollError {
    let e = ErrorEnvelope::parse(status, body);
    match e.code.as_str() {
        "invalid_token" => EnrollError::InvalidToken,
        "token_expired" => EnrollError::Expired,
        "token_exhausted" => EnrollError::Exhausted,
        _ => EnrollError::Refused {
            status: e.status,
            code: e.code,
            message: e.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_pick_the_error() {
        let body = |c: &str| format!(r#"{{"error":{{"code":"{c}","message":"m"}}}}"#);
        let u = StatusCode::UNAUTHORIZED;
        assert!(matches!(
            refusal(u, body("invalid_token").as_bytes()),
            EnrollError::InvalidToken
        ));
        assert!(matches!(
            refusal(u, body("token_expired").as_bytes()),
            EnrollError::Expired
        ));
        assert!(matches!(
            refusal(u, body("token_exhausted").as_bytes()),
            EnrollError::Exhausted
        ));
        let e = refusal(StatusCode::BAD_GATEWAY, b"<html>").to_string();
        assert!(e.contains("http_502") && e.contains("HTTP 502"), "{e}");
    }

    #[test]
    fn answers_are_read_from_data() {
        let e = parse(br#"{"data":{"id":"prx_1","token":"iprx_a","tags":["ci"]}}"#).unwrap();
        assert_eq!((e.id.as_str(), e.token.expose()), ("prx_1", "iprx_a"));
        assert_eq!(e.tags, ["ci"]);
        assert!(parse(br#"{"data":{"id":"prx_1"}}"#).is_err());
        assert!(parse(b"nope").is_err());
    }
}
