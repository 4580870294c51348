//! Prefixed object ids, bearer tokens, token hashes and timestamps.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// `<prefix><24 lowercase hex>`: 96 random bits, opaque to clients.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(12))
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A bearer token: `<prefix><64 lowercase hex>` (32 random bytes).
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(32))
}

/// Tokens are stored as the hex SHA-256 of the plaintext.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// True for `<prefix><64 lowercase hex>`.
pub fn is_token(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// ISO 8601 UTC with second precision, e.g. `2026-06-01T10:00:00Z`.
pub fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            let fmt =
                time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
            t.format(&fmt).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

pub fn iso_opt(ms: Option<i64>) -> serde_json::Value {
    ms.map_or(serde_json::Value::Null, |m| {
        serde_json::Value::String(iso(m))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = new_token("iak_");
        assert!(is_token(&t, "iak_"));
        assert!(!is_token(&t.to_uppercase(), "iak_"));
        assert!(!is_token("iak_00", "iak_"));
        assert_eq!(token_hash("x").len(), 64);
        assert!(new_id("ssr_").starts_with("ssr_"));
    }

    #[test]
    fn iso_has_second_precision() {
        assert_eq!(iso(1_780_308_000_123), "2026-06-01T10:00:00Z");
    }
}
