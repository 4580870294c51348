//! Client authentication against the proxy credential: cleartext (`AuthenticationCleartextPassword`,
//! iron-proxy's only method) or SASL SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL implements it,
//! without channel binding). Every comparison is constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::BytesMut;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::config::ClientAuth;
use super::wire::{self, WireError, take_cstr};
use crate::secrets::SecretValue;

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// PostgreSQL's default `scram_iterations`.
const ITERATIONS: u32 = 4096;

/// The proxy credential, with the SCRAM keys derived once (per listener start).
pub struct Credential {
    pub user: String,
    password_hash: [u8; 32],
    salt: [u8; 16],
    stored_key: [u8; 32],
    server_key: [u8; 32],
    pub method: ClientAuth,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password or proof: `28P01`.
    #[error("password authentication failed")]
    Failed,
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("system random number generator failed")]
    Random,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; unreachable, and a zero key fails every proof.
        Err(_) => return [0; 32],
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// RFC 5802 `Hi()`: PBKDF2 with HMAC-SHA-256, one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut b = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| AuthError::Random)?;
    Ok(b)
}

impl Credential {
    pub fn new(user: &str, password: &SecretValue, method: ClientAuth) -> Result<Self, AuthError> {
        let salt = random_bytes::<16>()?;
        // PostgreSQL applies SASLprep; for the ASCII passwords operators generate it is the
        // identity, and clients send the same bytes either way.
        let salted = hi(password.expose().as_bytes(), &salt, ITERATIONS);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Ok(Self {
            user: user.to_string(),
            password_hash: sha256(password.expose().as_bytes()),
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
            method,
        })
    }

    /// Constant-time: hashing first hides the length too.
    pub fn user_matches(&self, user: &str) -> bool {
        sha256(user.as_bytes())
            .ct_eq(&sha256(self.user.as_bytes()))
            .into()
    }

    fn password_matches(&self, password: &[u8]) -> bool {
        sha256(password).ct_eq(&self.password_hash).into()
    }

    /// Runs the configured exchange on `io`; on success nothing has been sent yet beyond the
    /// exchange itself (the caller sends AuthenticationOk).
    pub async fn authenticate<S>(&self, io: &mut S) -> Result<(), AuthError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.method {
            ClientAuth::Password => self.cleartext(io).await,
            ClientAuth::ScramSha256 => self.scram(io).await,
        }
    }

    async fn cleartext<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut S,
    ) -> Result<(), AuthError> {
        let mut out = BytesMut::new();
        wire::auth_cleartext(&mut out);
        io.write_all(&out).await.map_err(WireError::from)?;
        let body = expect_password_message(io).await?;
        let end = body.iter().position(|c| *c == 0).unwrap_or(body.len());
        if self.password_matches(&body[..end]) {
            Ok(())
        } else {
            Err(AuthError::Failed)
        }
    }

    async fn scram<S: AsyncRead + AsyncWrite + Unpin>(&self, io: &mut S) -> Result<(), AuthError> {
        let mut out = BytesMut::new();
        wire::auth_sasl(&mut out, SCRAM_SHA_256);
        io.write_all(&out).await.map_err(WireError::from)?;

        let body = expect_password_message(io).await?;
        let first = parse_initial_response(&body)?;
        let server_nonce = B64.encode(random_bytes::<18>()?);
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(self.salt));
        out.clear();
        wire::auth_sasl_continue(&mut out, server_first.as_bytes());
        io.write_all(&out).await.map_err(WireError::from)?;

        let body = expect_password_message(io).await?;
        let fin = std::str::from_utf8(&body).map_err(|_| AuthError::Failed)?;
        let server_sig = self.verify_final(&first, &server_first, &nonce, fin)?;
        out.clear();
        wire::auth_sasl_final(&mut out, format!("v={}", B64.encode(server_sig)).as_bytes());
        io.write_all(&out).await.map_err(WireError::from)?;
        Ok(())
    }

    /// Checks the client-final-message; returns the ServerSignature.
    fn verify_final(
        &self,
        first: &ClientFirst,
        server_first: &str,
        nonce: &str,
        fin: &str,
    ) -> Result<[u8; 32], AuthError> {
        let (without_proof, proof) = fin.rsplit_once(",p=").ok_or(AuthError::Failed)?;
        let mut attrs = without_proof.split(',');
        let binding = attrs.next().and_then(|a| a.strip_prefix("c="));
        let got_nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
        if binding != Some(B64.encode(first.gs2_header.as_bytes()).as_str())
            || got_nonce != Some(nonce)
        {
            return Err(AuthError::Failed);
        }
        let proof = B64.decode(proof).map_err(|_| AuthError::Failed)?;
        if proof.len() != 32 {
            return Err(AuthError::Failed);
        }
        let auth_message = format!("{},{server_first},{without_proof}", first.bare);
        let client_sig = hmac(&self.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = proof[i] ^ client_sig[i];
        }
        if bool::from(sha256(&client_key).ct_eq(&self.stored_key)) {
            Ok(hmac(&self.server_key, &[auth_message.as_bytes()]))
        } else {
            Err(AuthError::Failed)
        }
    }
}

async fn expect_password_message<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, AuthError> {
    let (tag, body) = wire::read_message(io).await?;
    if tag != b'p' {
        return Err(WireError::Protocol(format!(
            "expected a password message, got {:?}",
            tag as char
        ))
        .into());
    }
    Ok(body)
}

struct ClientFirst {
    gs2_header: String,
    /// client-first-message-bare (`n=...,r=...`).
    bare: String,
    client_nonce: String,
}

/// SASLInitialResponse: mechanism, length, client-first-message.
fn parse_initial_response(body: &[u8]) -> Result<ClientFirst, AuthError> {
    let mut b = body;
    let mechanism = take_cstr(&mut b)?;
    if mechanism != SCRAM_SHA_256 || b.len() < 4 {
        return Err(AuthError::Failed);
    }
    let msg = std::str::from_utf8(&b[4..]).map_err(|_| AuthError::Failed)?;
    // gs2-header: `n,,` or `y,,` (no channel binding); `p=...` demands binding we do not offer.
    let (flag, rest) = msg.split_once(',').ok_or(AuthError::Failed)?;
    if !matches!(flag, "n" | "y") {
        return Err(AuthError::Failed);
    }
    let (authzid, bare) = rest.split_once(',').ok_or(AuthError::Failed)?;
    let client_nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or(AuthError::Failed)?;
    Ok(ClientFirst {
        gs2_header: format!("{flag},{authzid},"),
        bare: bare.to_string(),
        client_nonce: client_nonce.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_matches_rfc7677_vector() {
        // RFC 7677 §3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = hi(b"pencil", &salt, 4096);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored = sha256(&client_key);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = hmac(&stored, &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_key = hmac(&salted, &[b"Server Key"]);
        assert_eq!(
            B64.encode(hmac(&server_key, &[auth.as_bytes()])),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn user_and_password_compare() {
        let c = Credential::new("app", &SecretValue::new("s3cret"), ClientAuth::Password).unwrap();
        assert!(c.user_matches("app"));
        assert!(!c.user_matches("App"));
        assert!(c.password_matches(b"s3cret"));
        assert!(!c.password_matches(b"s3cre"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn channel_binding_demand_is_refused() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        let msg = b"p=tls-server-end-point,,n=,r=abc";
        body.extend_from_slice(&(msg.len() as i32).to_be_bytes());
        body.extend_from_slice(msg);
        assert!(parse_initial_response(&body).is_err());
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        let msg = b"n,,n=,r=abc";
        body.extend_from_slice(&(msg.len() as i32).to_be_bytes());
        body.extend_from_slice(msg);
        let f = parse_initial_response(&body).unwrap();
        assert_eq!(f.gs2_header, "n,,");
        assert_eq!(f.bare, "n=,r=abc");
        assert_eq!(f.client_nonce, "abc");
    }
}
