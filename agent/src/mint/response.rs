//! Token-endpoint responses (RFC 6749 §5.1/§5.2, Google's ID-token reply), parsed without
//! ever quoting a value into an error.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::MintError;
use crate::secrets::SecretValue;

/// A successful token response.
pub struct TokenReply {
    pub access_token: SecretValue,
    pub expires_in: Option<Duration>,
    /// A rotated refresh token, when the endpoint issued one.
    pub refresh_token: Option<SecretValue>,
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
