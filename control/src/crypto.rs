//! Secret values at rest: AES-256-GCM with the server key.
//!
//! A sealed blob is `0x01 | key id (4 bytes) | nonce (12) | ciphertext+tag`. The key id is the
//! first four bytes of SHA-256(key), so blobs written under a previous key still open while a
//! rotation is in progress. The associated data binds a blob to the row and field it belongs to,
//! so a blob copied into another row does not decrypt.

use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value was written under an unknown server key (id {0})")]
    UnknownKey(String),
    #[error("sealed value failed authentication (wrong key or tampered data)")]
    Auth,
    #[error("server key: {0}")]
    BadKey(String),
    #[error("server key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct ServerKey {
    id: [u8; 4],
    cipher: Aes256Gcm,
}

impl ServerKey {
    fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey(format!(
                "must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest[..4]);
        Ok(Self {
            id,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)),
        })
    }

    fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::BadKey("not valid base64".into()))?;
        Self::from_bytes(&bytes)
    }
}

/// The current key (encrypts and decrypts) and previous keys (decrypt only, during rotation).
#[derive(Clone)]
pub struct Keyring {
    current: ServerKey,
    previous: Vec<ServerKey>,
}

impl Keyring {
    /// `current` and `previous` are base64 of 32 bytes each.
    pub fn from_base64(current: &str, previous: &[String]) -> Result<Self, CryptoError> {
        Ok(Self {
            current: ServerKey::from_base64(current)?,
            previous: previous
                .iter()
                .map(|p| ServerKey::from_base64(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Reads `path` (base64 of 32 bytes), generating it with mode 0600 when it does not exist.
    pub fn load_or_create_file(path: &Path, previous: &[String]) -> Result<Self, CryptoError> {
        let err = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text, previous),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Aes256Gcm::generate_key(&mut OsRng);
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                write_private(path, &text).map_err(err)?;
                Self::from_base64(&text, previous)
            }
            Err(e) => Err(err(e)),
        }
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: aad.as_bytes(),
        };
        // Encryption with a valid key and a fresh nonce cannot fail for inputs this size.
        let ct = self
            .current
            .cipher
            .encrypt(&nonce, payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, aad: &str, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < HEADER_LEN + 16 || blob[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let id = &blob[1..5];
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(id)))?;
        let nonce = Nonce::from_slice(&blob[5..HEADER_LEN]);
        key.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Auth)
    }

    /// True when `blob` was sealed with the current key (rotation skips those).
    pub fn is_current(&self, blob: &[u8]) -> bool {
        blob.len() >= 5 && blob[1..5] == self.current.id
    }

    pub fn seal_json(&self, aad: &str, value: &serde_json::Value) -> Vec<u8> {
        self.seal(aad, value.to_string().as_bytes())
    }

    pub fn open_json(&self, aad: &str, blob: &[u8]) -> Result<serde_json::Value, CryptoError> {
        let bytes = self.open(aad, blob)?;
        serde_json::from_slice(&bytes).map_err(|_| CryptoError::Malformed)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    }

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = Keyring::from_base64(&key(1), &[]).unwrap();
        let blob = k.seal("row:a", b"s3cr3t");
        assert!(!blob.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(k.open("row:a", &blob).unwrap(), b"s3cr3t");
        assert!(matches!(k.open("row:b", &blob), Err(CryptoError::Auth)));
    }

    #[test]
    fn previous_keys_open_old_blobs() {
        let old = Keyring::from_base64(&key(1), &[]).unwrap();
        let blob = old.seal("x", b"v");
        let new = Keyring::from_base64(&key(2), &[key(1)]).unwrap();
        assert_eq!(new.open("x", &blob).unwrap(), b"v");
        assert!(!new.is_current(&blob));
        let only_new = Keyring::from_base64(&key(2), &[]).unwrap();
        assert!(matches!(
            only_new.open("x", &blob),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Keyring::from_base64("abc", &[]).is_err());
        assert!(Keyring::from_base64("%%%", &[]).is_err());
    }
}
