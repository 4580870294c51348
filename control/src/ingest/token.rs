//! Per-proxy ingest tokens: `iing_<64 hex>`, derived from the proxy token as
//! `SHA-256("iron-control ingest token v1\0" || proxy token)`.
//!
//! Why derived: the sync answer must carry the token on every full answer, while the server
//! stores only hashes of credentials. Deriving it from the bearer of the sync call lets the
//! server hand out the same token on every sync (stable: the agent's exporter keeps working)
//! and store only its SHA-256 (`proxies.ingest_token_hash`), like every other token. It
//! changes exactly when the proxy token does (a new enrollment), and knowing it reveals
//! nothing about the proxy token. It authorises one thing only: writing audit records
//! attributed to that proxy.

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "iing_";
const DOMAIN: &[u8] = b"iron-control ingest token v1\0";

/// The ingest token of the proxy holding `proxy_token`.
pub fn derive(proxy_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(proxy_token.as_bytes());
    format!("{PREFIX}{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{is_token, token_hash};

    #[test]
    fn derived_tokens_are_stable_distinct_and_token_shaped() {
        let a = derive("iprx_aaaa");
        assert_eq!(a, derive("iprx_aaaa"));
        assert_ne!(a, derive("iprx_aaab"));
        assert!(is_token(&a, PREFIX));
        // Not the stored hash of the proxy token: the database does not give it away.
        assert_ne!(&a[PREFIX.len()..], token_hash("iprx_aaaa"));
    }
}
