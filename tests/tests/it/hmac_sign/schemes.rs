//! The signing schemes the tests configure and the verifier checks, and the credential values
//! (none of which may appear in the agent's output).

use super::upstream::Scheme;

// Credential values. None may appear in the agent's output.
pub const FX_KEY: &str = "fxkey-AKID-7d1c0e93";
pub const FX_SECRET_B64: &str = "c2VjcmV0LWZhbGNvbngta2V5LTAxMjM0NTY3ODk="; // secret-falconx-key-0123456789
pub const FX_SECRET_DECODED: &str = "secret-falconx-key-0123456789";
pub const FX_PASSPHRASE: &str = "fx-pass-phrase-4242";
pub const PRE_KEY: &str = "prehash-access-key-5150";
pub const PRE_SECRET: &str = "prehash-raw-secret-8675309";
pub const HEX_SECRET: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
pub const SHA1_KEY: &str = "sha1-client-id-314159";
pub const SHA1_SECRET_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const RFC_SECRET: &str = "rfc3339-raw-secret-2718";
pub const DEF_SECRET: &str = "defaults-raw-secret-1618";

pub const ALL_FIELDS: &str =
    "{{.Timestamp}}|{{.Method}}|{{.Path}}|{{.PathWithQuery}}|{{.Query}}|{{.Host}}|{{.Body}}";

pub fn schemes() -> Vec<Scheme> {
    vec![
        // The docs' exchange recipe: ts + method + path?query + body, base64 key and signature,
        // key / passphrase / timestamp headers alongside.
        Scheme {
            name: "falconx",
            timestamp: Some("unix_seconds"),
            algorithm: Some("sha256"),
            key_encoding: Some("base64"),
            output_encoding: Some("base64"),
            message: "{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}",
            recipe: "ts_method_pathq_body",
            creds: vec![
                ("key", "FX_KEY", FX_KEY),
                ("secret", "FX_SECRET", FX_SECRET_B64),
                ("passphrase", "FX_PASSPHRASE", FX_PASSPHRASE),
            ],
            headers: vec![
                ("FX-ACCESS-KEY", "{{.Credentials.key}}"),
                ("FX-ACCESS-SIGN", "{{.Signature}}"),
                ("FX-ACCESS-TIMESTAMP", "{{.Timestamp}}"),
                ("FX-ACCESS-PASSPHRASE", "{{.Credentials.passphrase}}"),
            ],
            sig_header: "FX-ACCESS-SIGN",
            sig_template: "{sig}",
            ts_header: "FX-ACCESS-TIMESTAMP",
            cred_headers: vec![
                ("FX-ACCESS-KEY", "key"),
                ("FX-ACCESS-PASSPHRASE", "passphrase"),
            ],
            allow_chunked_body: false,
            agent_signs: true,
        },
        // The docs' "credential mixed into the prehash" recipe: raw key, hex signature.
        Scheme {
            name: "prehash",
            timestamp: Some("unix_seconds"),
            algorithm: Some("sha256"),
            key_encoding: Some("raw"),
            output_encoding: Some("hex"),
            message: "{{.Timestamp}}{{.Method}}{{.Path}}{{.Credentials.key}}{{.Body}}",
            recipe: "ts_method_path_key_body",
            creds: vec![
                ("key", "PRE_KEY", PRE_KEY),
                ("secret", "PRE_SECRET", PRE_SECRET),
            ],
            headers: vec![
                ("X-Access-Key", "{{.Credentials.key}}"),
                ("X-Signature", "{{.Signature}}"),
                ("X-Timestamp", "{{.Timestamp}}"),
            ],
            sig_header: "X-Signature",
            sig_template: "{sig}",
            ts_header: "X-Timestamp",
            cred_headers: vec![("X-Access-Key", "key")],
            allow_chunked_body: false,
            agent_signs: true,
        },
        Scheme {
            name: "sha512",
            timestamp: Some("unix_millis"),
            algorithm: Some("sha512"),
            key_encoding: Some("hex"),
            output_encoding: Some("hex"),
            message: ALL_FIELDS,
            recipe: "all_fields",
            creds: vec![("secret", "HEX_SECRET", HEX_SECRET)],
            headers: vec![("X-Sig", "{{.Signature}}"), ("X-Ts", "{{.Timestamp}}")],
            sig_header: "X-Sig",
            sig_template: "{sig}",
            ts_header: "X-Ts",
            cred_headers: vec![],
            allow_chunked_body: false,
            agent_signs: true,
        },
        // Signature inside a composed Authorization value.
        Scheme {
            name: "sha1",
            timestamp: Some("unix_nanos"),
            algorithm: Some("sha1"),
            key_encoding: Some("base64"),
            output_encoding: Some("base64"),
            message: ALL_FIELDS,
            recipe: "all_fields",
            creds: vec![
                ("key", "SHA1_KEY", SHA1_KEY),
                ("secret", "SHA1_SECRET", SHA1_SECRET_B64),
            ],
            headers: vec![
                ("Authorization", "HMAC {{.Credentials.key}}:{{.Signature}}"),
                ("X-Ts", "{{.Timestamp}}"),
            ],
            sig_header: "Authorization",
            sig_template: "HMAC {key}:{sig}",
            ts_header: "X-Ts",
            cred_headers: vec![],
            allow_chunked_body: false,
            agent_signs: true,
        },
        Scheme {
            name: "rfc",
            timestamp: Some("rfc3339"),
            algorithm: Some("sha256"),
            key_encoding: Some("raw"),
            output_encoding: Some("hex"),
            message: ALL_FIELDS,
            recipe: "all_fields",
            creds: vec![("secret", "RFC_SECRET", RFC_SECRET)],
            headers: vec![("X-Sig", "{{.Signature}}"), ("X-Date", "{{.Timestamp}}")],
            sig_header: "X-Sig",
            sig_template: "{sig}",
            ts_header: "X-Date",
            cred_headers: vec![],
            allow_chunked_body: true,
            agent_signs: true,
        },
        // Every enum left at its default: unix_seconds, sha256, raw key, base64 signature.
        Scheme {
            name: "defaults",
            timestamp: None,
            algorithm: None,
            key_encoding: None,
            output_encoding: None,
            message: "{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}",
            recipe: "ts_method_pathq_body",
            creds: vec![("secret", "DEF_SECRET", DEF_SECRET)],
            headers: vec![("X-Sig", "{{.Signature}}"), ("X-Ts", "{{.Timestamp}}")],
            sig_header: "X-Sig",
            sig_template: "{sig}",
            ts_header: "X-Ts",
            cred_headers: vec![],
            allow_chunked_body: false,
            agent_signs: true,
        },
        // Negative control: the verifier knows it, the agent does not sign it.
        Scheme {
            name: "unsigned",
            timestamp: None,
            algorithm: None,
            key_encoding: None,
            output_encoding: None,
            message: "{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}",
            recipe: "ts_method_pathq_body",
            creds: vec![("secret", "DEF_SECRET", DEF_SECRET)],
            headers: vec![("X-Sig", "{{.Signature}}"), ("X-Ts", "{{.Timestamp}}")],
            sig_header: "X-Sig",
            sig_template: "{sig}",
            ts_header: "X-Ts",
            cred_headers: vec![],
            allow_chunked_body: false,
            agent_signs: false,
        },
    ]
}

pub const ALL_SECRETS: [&str; 11] = [
    FX_KEY,
    FX_SECRET_B64,
    FX_SECRET_DECODED,
    FX_PASSPHRASE,
    PRE_KEY,
    PRE_SECRET,
    HEX_SECRET,
    SHA1_KEY,
    SHA1_SECRET_B64,
    RFC_SECRET,
    DEF_SECRET,
];

pub fn rejection_schemes() -> Vec<Scheme> {
    let base = |name: &'static str,
                creds: Vec<(&'static str, &'static str, &'static str)>,
                headers: Vec<(&'static str, &'static str)>,
                key_encoding: &'static str,
                allow_chunked_body: bool| Scheme {
        name,
        timestamp: Some("unix_seconds"),
        algorithm: Some("sha256"),
        key_encoding: Some(key_encoding),
        output_encoding: Some("base64"),
        message: "{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}",
        recipe: "ts_method_pathq_body",
        creds,
        headers,
        sig_header: "X-Sig",
        sig_template: "{sig}",
        ts_header: "X-Ts",
        cred_headers: vec![],
        allow_chunked_body,
        agent_signs: true,
    };
    let sig = vec![("X-Sig", "{{.Signature}}"), ("X-Ts", "{{.Timestamp}}")];
    vec![
        base(
            "strict",
            vec![("secret", "STRICT_SECRET", DEF_SECRET)],
            sig.clone(),
            "raw",
            false,
        ),
        base(
            "chunky",
            vec![("secret", "CHUNKY_SECRET", RFC_SECRET)],
            sig.clone(),
            "raw",
            true,
        ),
        base(
            "badkey",
            vec![("secret", "BADKEY_SECRET", "not*base64!key-4711")],
            sig.clone(),
            "base64",
            false,
        ),
        // The passphrase's env var is not set (see `setup` callers).
        base(
            "nocred",
            vec![
                ("secret", "NOCRED_SECRET", PRE_SECRET),
                ("passphrase", "NOCRED_PASSPHRASE_UNSET", ""),
            ],
            vec![
                ("X-Sig", "{{.Signature}}"),
                ("X-Ts", "{{.Timestamp}}"),
                ("X-Passphrase", "{{.Credentials.passphrase}}"),
            ],
            "raw",
            false,
        ),
        // A credential that cannot be a header value (it holds a line break).
        base(
            "badheader",
            vec![
                ("secret", "BADHEADER_SECRET", HEX_SECRET),
                (
                    "passphrase",
                    "BADHEADER_PASSPHRASE",
                    "multi\nline-passphrase-99",
                ),
            ],
            vec![
                ("X-Sig", "{{.Signature}}"),
                ("X-Ts", "{{.Timestamp}}"),
                ("X-Passphrase", "{{.Credentials.passphrase}}"),
            ],
            "raw",
            false,
        ),
    ]
}
