//! The `transforms:` list: one typed, strict config per transform kind.
//!
//! Every config struct denies unknown fields and defaults every field, so that a missing
//! required field is reported by validation (with all its siblings) rather than as the single
//! serde error that would hide the rest of the entry.

pub mod allowlist;
pub mod annotate;
pub mod aws_auth;
pub mod body_capture;
pub mod gcp_auth;
pub mod gcp_id_token;
pub mod grpc;
pub mod header_allowlist;
pub mod hmac_sign;
pub mod judge;
pub mod oauth_token;
pub mod secrets;
pub mod source;
pub mod source_ip;
pub mod template;

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Cidr, ConfigError};

pub use allowlist::{AllowlistConfig, AllowlistMode};
pub use annotate::{AnnotateConfig, AnnotationGroup};
pub use aws_auth::{AwsAuthConfig, AwsCredentialsProvider, AwsCredentialsProviderType};
pub use body_capture::{BodyCaptureConfig, DEFAULT_BODY_CAPTURE_BYTES};
pub use gcp_auth::{GcpAuthConfig, GcpCredentialsProvider, GcpCredentialsProviderType};
pub use gcp_id_token::GcpIdTokenConfig;
pub use grpc::{GrpcConfig, GrpcTlsConfig};
pub use header_allowlist::HeaderAllowlistConfig;
pub use hmac_sign::{
    HmacAlgorithm, HmacHeader, HmacSignConfig, HmacSignatureConfig, HmacTimestampConfig,
    KeyEncoding, OutputEncoding, TimestampFormat,
};
pub use judge::{
    CircuitBreakerConfig, JudgeConfig, JudgeFallback, JudgeProviderConfig, JudgeProviderType,
};
pub use oauth_token::{OauthGrant, OauthTokenConfig, OauthTokenEntry};
pub use secrets::{InjectConfig, ReplaceConfig, SecretEntry, SecretsConfig};
pub use source::SecretSource;
pub use source_ip::SourceIp;

/// What every transform kind's config type provides: its semantic checks and its non-fatal
/// observations. The YAML shape comes from its `Deserialize` impl.
pub trait KindConfig: Default {
    /// Semantic checks; `path` is the `config` block's path, e.g. `transforms[2].config`.
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>);

    /// Non-fatal observations (rules that make a transform apply everywhere or nowhere, ...).
    fn warnings(&self, _path: &str, _out: &mut Vec<String>) {}
}

/// The registry of transform kinds, config side: one row per kind (YAML name, variant, config
/// type). Everything that dispatches on the kind ([`TransformSpec`], [`TRANSFORM_NAMES`],
/// decoding, defaults, validation, warnings) is generated from it. The runtime side is the
/// table in `transform::registry`.
macro_rules! transform_kinds {
    ($($name:literal => $variant:ident($config:ty),)*) => {
        /// Every transform kind iron-proxy documents, each with its typed config.
        // Built once per (re)load and never moved in a hot path, so variant size does not matter.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone)]
        pub enum TransformSpec {
            $($variant($config),)*
        }

        const TRANSFORM_COUNT: usize = [$($name),*].len();

        /// Every transform name iron-proxy registers, in its documentation order.
        pub const TRANSFORM_NAMES: [&str; TRANSFORM_COUNT] = [$($name),*];

        impl TransformSpec {
            /// The transform name as written in YAML (`name:`).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            /// The config a kind gets when its entry has no `config` key.
            pub fn default_for(kind: &str) -> Option<Self> {
                match kind {
                    $($name => Some(Self::$variant(Default::default())),)*
                    _ => None,
                }
            }

            /// Semantic checks; `path` is the `config` block's path, e.g. `transforms[2].config`.
            pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
                match self {
                    $(Self::$variant(c) => KindConfig::validate(c, path, errors),)*
                }
            }

            /// Non-fatal observations (rules that make a transform apply everywhere or nowhere).
            pub fn warnings(&self, path: &str, out: &mut Vec<String>) {
                match self {
                    $(Self::$variant(c) => KindConfig::warnings(c, path, out),)*
                }
            }

            /// Decodes the `config` value of `kind`; a null `config:` means the defaults.
            fn decode<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
                match kind {
                    $($name => Ok(Self::$variant(
                        Option::<$config>::deserialize(d)?.unwrap_or_default(),
                    )),)*
                    other => Err(de::Error::custom(unknown_transform_message(other))),
                }
            }
        }
    };
}

transform_kinds! {
    "allowlist" => Allowlist(AllowlistConfig),
    "header_allowlist" => HeaderAllowlist(HeaderAllowlistConfig),
    "annotate" => Annotate(AnnotateConfig),
    "secrets" => Secrets(SecretsConfig),
    "body_capture" => BodyCapture(BodyCaptureConfig),
    "oauth_token" => OauthToken(OauthTokenConfig),
    "gcp_auth" => GcpAuth(GcpAuthConfig),
    "gcp_id_token" => GcpIdToken(GcpIdTokenConfig),
    "aws_auth" => AwsAuth(AwsAuthConfig),
    "hmac_sign" => HmacSign(HmacSignConfig),
    "judge" => Judge(JudgeConfig),
    "grpc" => Grpc(GrpcConfig),
}

/// One `{name, config}` element, with `config` decoded strictly for its kind.
#[derive(Debug, Clone)]
pub struct TransformEntry {
    pub name: String,
    pub spec: TransformSpec,
}

impl TransformEntry {
    /// Semantic checks; `path` is the entry's path, e.g. `transforms[2]`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        self.spec.validate(&format!("{path}.config"), errors);
    }
}

/// The registered name matching `name`, as a `'static` string.
pub fn known_kind(name: &str) -> Option<&'static str> {
    TRANSFORM_NAMES.iter().copied().find(|k| *k == name)
}

/// The message for a `name:` that is not a registered transform.
pub fn unknown_transform_message(name: &str) -> String {
    format!(
        "unknown transform {name:?}, expected one of {}",
        TRANSFORM_NAMES.join(", ")
    )
}

/// Decodes a `config` value for a known kind. A null `config:` means the kind's defaults.
#[derive(Debug, Clone, Copy)]
pub struct KindSeed(pub &'static str);

impl<'de> DeserializeSeed<'de> for KindSeed {
    type Value = TransformSpec;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TransformSpec, D::Error> {
        TransformSpec::decode(self.0, d)
    }
}

/// `name:` value: a string that must be a registered transform.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = &'static str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        let name = String::deserialize(d)?;
        known_kind(&name).ok_or_else(|| de::Error::custom(unknown_transform_message(&name)))
    }
}

/// Generic decoding for any serde format (the YAML loader uses its own location-keeping path in
/// `yaml.rs`). `config` is decoded directly when `name` precedes it, and buffered otherwise.
impl<'de> Deserialize<'de> for TransformEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = TransformEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a transform entry with `name` and `config`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TransformEntry, A::Error> {
                let mut name: Option<&'static str> = None;
                let mut spec: Option<TransformSpec> = None;
                let mut buffered: Option<serde_json::Value> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => {
                            if name.is_some() {
                                return Err(de::Error::duplicate_field("name"));
                            }
                            name = Some(map.next_value_seed(NameSeed)?);
                        }
                        "config" => {
                            if spec.is_some() || buffered.is_some() {
                                return Err(de::Error::duplicate_field("config"));
                            }
                            match name {
                                Some(kind) => spec = Some(map.next_value_seed(KindSeed(kind))?),
                                None => buffered = Some(map.next_value()?),
                            }
                        }
                        other => return Err(de::Error::unknown_field(other, &["name", "config"])),
                    }
                }
                let kind = name.ok_or_else(|| de::Error::missing_field("name"))?;
                let spec = match (spec, buffered) {
                    (Some(s), _) => s,
                    (None, Some(v)) => {
                        let mut track = serde_path_to_error::Track::new();
                        let res = KindSeed(kind)
                            .deserialize(serde_path_to_error::Deserializer::new(v, &mut track));
                        res.map_err(|e| {
                            let inner = track.path().to_string();
                            let path = if inner == "." {
                                "config".to_string()
                            } else {
                                format!("config.{inner}")
                            };
                            de::Error::custom(format!("{path}: {e}"))
                        })?
                    }
                    (None, None) => TransformSpec::default_for(kind)
                        .ok_or_else(|| de::Error::custom(unknown_transform_message(kind)))?,
                };
                Ok(TransformEntry {
                    name: kind.to_string(),
                    spec,
                })
            }
        }
        d.deserialize_map(EntryVisitor)
    }
}

/// A destination rule shared by every transform: `host` or `cidr`, plus optional methods/paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub host: Option<String>,
    pub cidr: Option<Cidr>,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    /// Only requests from this client address (IP or CIDR) match.
    pub source_ip: Option<SourceIp>,
}

impl RuleConfig {
    /// `path` is the rule's own path, e.g. `transforms[0].config.rules[3]`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match (&self.host, &self.cidr) {
            (Some(_), Some(_)) => errors.push(ConfigError::new(
                path,
                "host and cidr are mutually exclusive",
            )),
            (None, None) => errors.push(ConfigError::new(path, "one of host or cidr is required")),
            (Some(h), None) if h.trim().is_empty() => errors.push(ConfigError::new(
                format!("{path}.host"),
                "must not be empty",
            )),
            _ => {}
        }
        for (i, p) in self.paths.iter().enumerate() {
            if !p.starts_with('/') {
                errors.push(ConfigError::new(
                    format!("{path}.paths[{i}]"),
                    format!("path {p:?} must start with /"),
                ));
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if m.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.methods[{i}]"),
                    "must not be empty",
                ));
            }
        }
    }
}

/// Validates every rule of a list; `path` is the list's path (`....rules`).
pub fn validate_rules(rules: &[RuleConfig], path: &str, errors: &mut Vec<ConfigError>) {
    for (i, r) in rules.iter().enumerate() {
        r.validate(&format!("{path}[{i}]"), errors);
    }
}

/// As [`validate_rules`], and at least one rule is required.
pub fn validate_required_rules(rules: &[RuleConfig], path: &str, errors: &mut Vec<ConfigError>) {
    if rules.is_empty() {
        errors.push(ConfigError::new(path, "at least one rule is required"));
    }
    validate_rules(rules, path, errors);
}

/// Checks a header-name list whose entries are literal names or `/regex/` patterns.
pub fn validate_header_patterns(
    entries: &[String],
    path: &str,
    what: &str,
    errors: &mut Vec<ConfigError>,
) {
    for (i, h) in entries.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if h.trim().is_empty() {
            errors.push(ConfigError::new(p, "must not be empty"));
        } else if let Some(re) = regex_entry(h)
            && let Err(e) = check_regex(re)
        {
            errors.push(ConfigError::new(
                p,
                format!("invalid {what} regex {h:?}: {e}"),
            ));
        }
    }
}

/// The pattern inside a `/regex/` entry, or `None` for a literal name.
pub fn regex_entry(s: &str) -> Option<&str> {
    s.strip_prefix('/')
        .and_then(|r| r.strip_suffix('/'))
        .filter(|_| s.len() >= 2)
}

/// Syntax check of a Go RE2 expression (RE2 and `regex-syntax` agree on the common subset).
pub fn check_regex(pattern: &str) -> Result<(), String> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| {
            // The library's message spans several lines with a caret diagram; keep the last line.
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
}

/// Pushes `"<path>: is required"` when `value` is absent or blank.
pub fn require_str(value: Option<&str>, path: &str, errors: &mut Vec<ConfigError>) {
    if value.is_none_or(|v| v.trim().is_empty()) {
        errors.push(ConfigError::new(path, "is required"));
    }
}
