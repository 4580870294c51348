//! The signing primitives: timestamp formats, key decoding, HMAC, signature encoding. Pure
//! functions, so each choice is checked against known vectors below.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::config::transforms::hmac_sign::{
    HmacAlgorithm, KeyEncoding, OutputEncoding, TimestampFormat,
};

/// Why the HMAC key did not decode. Messages carry positions and kinds, never key bytes
/// (the `base64`/`hex` crates' own errors quote the offending character).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("decoding base64 key: {0}")]
    Base64(&'static str),
    #[error("decoding base64 key: invalid character at offset {0}")]
    Base64Byte(usize),
    #[error("decoding hex key: odd length")]
    HexOddLength,
    #[error("decoding hex key: invalid character at offset {0}")]
    HexByte(usize),
    #[error("the decoded key is empty")]
    Empty,
}

/// `.Timestamp` for `now`: Go's `Unix()`, `UnixMilli()`, `UnixNano()` or `time.RFC3339` in UTC
/// (whole seconds, `Z`).
pub fn timestamp(format: TimestampFormat, now: OffsetDateTime) -> String {
    match format {
        TimestampFormat::UnixSeconds => now.unix_timestamp().to_string(),
        TimestampFormat::UnixMillis => (now.unix_timestamp_nanos() / 1_000_000).to_string(),
        TimestampFormat::UnixNanos => now.unix_timestamp_nanos().to_string(),
        TimestampFormat::Rfc3339 => {
            let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
            // Formatting a UTC date with this description cannot fail; fall back to seconds.
            now.to_offset(time::UtcOffset::UTC)
                .format(&fmt)
                .unwrap_or_else(|_| now.unix_timestamp().to_string())
        }
    }
}

/// The HMAC key from the `secret` credential's text, per `signature.key_encoding`.
pub fn decode_key(encoding: KeyEncoding, value: &str) -> Result<Vec<u8>, KeyDecodeError> {
    let key = match encoding {
        KeyEncoding::Raw => value.as_bytes().to_vec(),
        KeyEncoding::Base64 => {
            // Go's StdEncoding skips line breaks, so a key file ending in a newline works.
            let cleaned: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            STANDARD.decode(cleaned.as_bytes()).map_err(|e| match e {
                base64::DecodeError::InvalidByte(at, _) => KeyDecodeError::Base64Byte(at),
                base64::DecodeError::InvalidLength(_) => KeyDecodeError::Base64("invalid length"),
                base64::DecodeError::InvalidLastSymbol(at, _) => KeyDecodeError::Base64Byte(at),
                base64::DecodeError::InvalidPadding => KeyDecodeError::Base64("invalid padding"),
            })?
        }
        KeyEncoding::Hex => hex::decode(value).map_err(|e| match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => KeyDecodeError::HexByte(index),
            hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
                KeyDecodeError::HexOddLength
            }
        })?,
    };
    if key.is_empty() {
        return Err(KeyDecodeError::Empty);
    }
    Ok(key)
}

/// HMAC of `message` under `key`, encoded per `signature.output_encoding`.
pub fn sign(
    algorithm: HmacAlgorithm,
    output: OutputEncoding,
    key: &[u8],
    message: &[u8],
) -> String {
    let digest = match algorithm {
        HmacAlgorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(key, message),
        HmacAlgorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(key, message),
        HmacAlgorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(key, message),
    };
    match output {
        OutputEncoding::Base64 => STANDARD.encode(digest),
        OutputEncoding::Hex => hex::encode(digest),
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length (long keys are hashed), so this never fails; an
    // empty result would only produce a signature the upstream rejects.
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2 (key "Jefe") and RFC 2202 test case 2 for SHA-1.
    const MSG: &[u8] = b"what do ya want for nothing?";

    #[test]
    fn rfc_vectors() {
        assert_eq!(
            sign(HmacAlgorithm::Sha256, OutputEncoding::Hex, b"Jefe", MSG),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign(HmacAlgorithm::Sha512, OutputEncoding::Hex, b"Jefe", MSG),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert_eq!(
            sign(HmacAlgorithm::Sha1, OutputEncoding::Hex, b"Jefe", MSG),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            sign(HmacAlgorithm::Sha1, OutputEncoding::Base64, b"Jefe", MSG),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn key_encodings() {
        assert_eq!(decode_key(KeyEncoding::Raw, "Jefe").unwrap(), b"Jefe");
        assert_eq!(
            decode_key(KeyEncoding::Base64, "SmVmZQ==\n").unwrap(),
            b"Jefe"
        );
        assert_eq!(decode_key(KeyEncoding::Hex, "4A656665").unwrap(), b"Jefe");
        assert_eq!(
            decode_key(KeyEncoding::Base64, "Sm!mZQ=="),
            Err(KeyDecodeError::Base64Byte(2))
        );
        assert_eq!(
            decode_key(KeyEncoding::Hex, "4a6g"),
            Err(KeyDecodeError::HexByte(3))
        );
        assert_eq!(
            decode_key(KeyEncoding::Hex, "4a6"),
            Err(KeyDecodeError::HexOddLength)
        );
        // Error text never quotes the key's characters.
        let e = decode_key(KeyEncoding::Hex, "zz").unwrap_err().to_string();
        assert!(!e.contains('z'), "{e}");
    }

    #[test]
    fn timestamp_formats() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(timestamp(TimestampFormat::UnixSeconds, t), "1700000000");
        assert_eq!(timestamp(TimestampFormat::UnixMillis, t), "1700000000123");
        assert_eq!(
            timestamp(TimestampFormat::UnixNanos, t),
            "1700000000123456789"
        );
        assert_eq!(
            timestamp(TimestampFormat::Rfc3339, t),
            "2023-11-14T22:13:20Z"
        );
    }
}
