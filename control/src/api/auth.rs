//! API key authentication (`Authorization: Bearer iak_...`), checked against stored SHA-256
//! hashes. The key's id is passed on as a request extension.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use super::S;
use crate::error::ApiError;
use crate::ids::{is_token, token_hash};

/// The id (`ak_...`) of the API key that authenticated the request.
#[derive(Clone, Debug)]
pub struct ApiKeyId(pub String);

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub async fn require_api_key(State(st): State<S>, mut req: Request, next: Next) -> Response {
    let unauthorized = || ApiError::unauthorized("invalid or missing API key").into_response();
    let Some(token) = bearer(req.headers()).filter(|t| is_token(t, "iak_")) else {
        return unauthorized();
    };
    let found = sqlx::query_scalar::<_, String>(
        "SELECT id FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(token_hash(token))
    .fetch_optional(&st.db.pool)
    .await;
    match found {
        Ok(Some(id)) => {
            req.extensions_mut().insert(ApiKeyId(id));
            next.run(req).await
        }
        Ok(None) => unauthorized(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
