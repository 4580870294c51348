//! Audit ingest and query: `POST /v1/logs` (OTLP/HTTP logs, a proxy's ingest token as the
//! bearer) and `GET /api/v1/audit` (API key; the ring of recent events, filtered).

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sqlx::Row;

use super::S;
use super::auth::bearer;
use crate::error::{ApiError, ApiResult};
use crate::ids::{is_token, now_ms, token_hash};
use crate::ingest::otlp::{self, DecodeError, Encoding};
use crate::ingest::{Filter, token};
use crate::input::parse_query;

/// `POST /v1/logs`, outside the API-key layer: it has its own credential.
pub fn ingest_routes() -> Router<S> {
    Router::new().route("/v1/logs", post(ingest))
}

/// `GET /api/v1/audit`, behind the API key.
pub fn routes() -> Router<S> {
    Router::new().route("/api/v1/audit", get(query))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {max} bytes"),
    )
}

fn unsupported(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
    )
}

/// The proxy an ingest token belongs to: `(id, tags)`; deleted proxies are refused.
async fn proxy_of(st: &S, headers: &HeaderMap) -> ApiResult<(String, Vec<String>)> {
    let invalid = || ApiError::unauthorized("invalid or missing ingest token");
    let t = bearer(headers)
        .filter(|t| is_token(t, token::PREFIX))
        .ok_or_else(invalid)?;
    let row = sqlx::query(
        "SELECT id, tags FROM proxies WHERE ingest_token_hash = $1 AND deleted_at IS NULL",
    )
    .bind(token_hash(t))
    .fetch_optional(&st.db.pool)
    .await?
    .ok_or_else(invalid)?;
    let tags = serde_json::from_str(&row.try_get::<String, _>("tags")?).unwrap_or_default();
    Ok((row.try_get("id")?, tags))
}

async fn ingest(State(st): State<S>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let (proxy_id, tags) = proxy_of(&st, &headers).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let enc = Encoding::from_content_type(ct).ok_or_else(|| {
        unsupported("Content-Type must be application/x-protobuf or application/json".into())
    })?;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(unsupported(format!(
                "Content-Encoding {other:?} is not supported (gzip or none)"
            )));
        }
    };
    let max = st.ingest.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let bytes = match Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large(max)),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let req = otlp::decode(&bytes, gzip, enc, max).map_err(|e| match e {
        DecodeError::TooLarge(n) => too_large(n),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let events = otlp::events(&req, &proxy_id, &tags, now_ms());
    tracing::debug!(proxy_id = %proxy_id, records = events.len(), "audit records received");
    st.ingest.ring.push_all(events);
    if let Some(f) = &st.ingest.forward {
        f.offer(req, &proxy_id, &tags);
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, enc.content_type())],
        enc.success_body(),
    )
        .into_response())
}

async fn query(State(st): State<S>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = parse_query(q.as_deref())?;
    let p = |k: &str| q.params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let filter = Filter {
        tags: p("tags")
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        host: p("host").map(str::to_string),
        action: p("action").map(str::to_string),
        proxy_id: p("proxy_id").map(str::to_string),
        since_ms: p("since").map(|s| since(s, now_ms())).transpose()?,
    };
    let (total, page) = st.ingest.ring.query(
        &filter,
        usize::try_from(q.offset()).unwrap_or(usize::MAX),
        usize::try_from(q.limit).unwrap_or(50),
    );
    let items: Vec<_> = page.iter().map(|e| e.to_json()).collect();
    Ok(super::json_response(
        StatusCode::OK,
        &json!({"data": items, "meta": q.meta(total as i64)}),
    ))
}

/// `since`: an RFC 3339 time, or an age such as `90s`, `15m`, `2h`, `1d`.
fn since(s: &str, now: i64) -> ApiResult<i64> {
    let bad = || {
        ApiError::bad_request(format!(
            "since must be an RFC 3339 time or an age like 15m, got `{s}`"
        ))
    };
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad());
    }
    let unit = match s.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => return Err(bad()),
    };
    let n: i64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(unit)
        .filter(|ms| *ms >= 0)
        .map(|ms| now - ms)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_ages() {
        assert_eq!(since("2026-06-01T10:00:00Z", 0).unwrap(), 1_780_308_000_000);
        assert_eq!(since("15m", 1_000_000).unwrap(), 100_000);
        assert_eq!(since("2h", 7_200_000).unwrap(), 0);
        for bad in ["yesterday", "5", "-5m", "m", "2026-06-01"] {
            assert!(since(bad, 0).is_err(), "{bad}");
        }
    }
}
