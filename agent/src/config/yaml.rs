//! YAML → typed config, reporting every structural error rather than the first.
//!
//! A streaming deserializer cannot resume after an error, so each top-level block and each
//! transform entry is decoded in its own pass over the text: a navigator walks to the block
//! (skipping everything else) and decodes it there. Decoding in place, rather than through an
//! intermediate value, keeps serde-saphyr's line and column on every error.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::SourceLocation;
use super::transforms::{
    KindSeed, TransformEntry, TransformSpec, known_kind, unknown_transform_message,
};
use super::{Config, ConfigError};

/// Names accepted at the top level, in documentation order.
pub const TOP_LEVEL_KEYS: [&str; 12] = [
    "dns",
    "proxy",
    "tls",
    "transforms",
    "mcp",
    "mcp_gateway",
    "metrics",
    "management",
    "control_plane",
    "log",
    "intercept",
    "postgres",
];

/// The outcome of decoding a document: whatever decoded, and every error found on the way.
pub(super) struct Parsed {
    pub config: Config,
    pub errors: Vec<ConfigError>,
    /// Top-level blocks that failed to decode: semantic checks under them would be noise.
    pub failed_blocks: Vec<&'static str>,
    /// The original `transforms[i]` index of each entry in `config.transforms`.
    pub transform_indices: Vec<usize>,
    /// The document itself failed (syntax, not a mapping): nothing else is meaningful.
    pub fatal: bool,
}

pub(super) fn parse_document(text: &str) -> Parsed {
    let mut parsed = Parsed {
        config: Config::default(),
        errors: Vec::new(),
        failed_blocks: Vec::new(),
        transform_indices: Vec::new(),
        fatal: false,
    };
    if text.trim().is_empty() {
        return parsed;
    }
    // Pass 0: syntax, top-level shape and keys. A failure here makes every other pass fail the
    // same way, so it is reported alone.
    let top = match decode(text, &[], PhantomData::<Option<TopLevel>>) {
        Ok(t) => t.flatten().unwrap_or_default(),
        Err(e) => {
            parsed.errors.push(e);
            parsed.fatal = true;
            return parsed;
        }
    };
    for (key, loc) in &top.keys {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            let msg =
                <de::value::Error as de::Error>::unknown_field(key, &TOP_LEVEL_KEYS).to_string();
            parsed
                .errors
                .push(ConfigError::new(key.clone(), msg).with_location(*loc));
        }
    }
    let present = |k: &str| top.keys.iter().any(|(key, _)| key == k);

    // With `$finish`: blocks where absent and empty differ (`Option` fields).
    macro_rules! block {
        ($key:literal, $field:ident) => {
            block!($key, $field, |v: Option<_>| v.unwrap_or_default())
        };
        ($key:literal, $field:ident, $finish:expr) => {
            if present($key) {
                match decode(text, &[Seg::Key($key)], PhantomData::<Option<_>>) {
                    Ok(v) => parsed.config.$field = $finish(v.flatten()),
                    Err(e) => {
                        parsed.errors.push(e);
                        parsed.failed_blocks.push($key);
                    }
                }
            }
        };
    }
    block!("dns", dns);
    block!("proxy", proxy);
    block!("tls", tls);
    if present("transforms") {
        for i in 0..top.transforms_len {
            match decode_transform(text, i) {
                Ok(entry) => {
                    parsed.config.transforms.push(entry);
                    parsed.transform_indices.push(i);
                }
                Err(mut errs) => parsed.errors.append(&mut errs),
            }
        }
    }
    block!("mcp", mcp, |v| v);
    block!("mcp_gateway", mcp_gateway, |v| v);
    block!("metrics", metrics);
    block!("management", management);
    block!("control_plane", control_plane);
    block!("log", log);
    block!("intercept", intercept);
    block!("postgres", postgres);
    parsed
}

/// Decodes `transforms[i]`: first its `name` (wherever it sits in the mapping), then `config`
/// in place with the seed for that kind, so a `config` written before `name` keeps locations.
fn decode_transform(text: &str, i: usize) -> Result<TransformEntry, Vec<ConfigError>> {
    let base = format!("transforms[{i}]");
    let head = decode(
        text,
        &[Seg::Key("transforms"), Seg::Index(i)],
        EntryHeadSeed,
    )
    .map_err(|e| vec![e])?
    .unwrap_or_default();
    let mut errors = Vec::new();
    for (k, loc) in &head.unknown_keys {
        let msg =
            <de::value::Error as de::Error>::unknown_field(k, &["name", "config"]).to_string();
        errors.push(ConfigError::new(format!("{base}.{k}"), msg).with_location(*loc));
    }
    let kind = match &head.name {
        None => {
            errors.push(ConfigError::new(format!("{base}.name"), "is required"));
            None
        }
        Some((name, loc)) => {
            let kind = known_kind(name);
            if kind.is_none() {
                errors.push(
                    ConfigError::new(format!("{base}.name"), unknown_transform_message(name))
                        .with_location(*loc),
                );
            }
            kind
        }
    };
    let Some(kind) = kind else { return Err(errors) };
    let spec = if head.has_config {
        decode(
            text,
            &[Seg::Key("transforms"), Seg::Index(i), Seg::Key("config")],
            KindSeed(kind),
        )
        .map_err(|e| {
            let mut all = std::mem::take(&mut errors);
            all.push(e);
            all
        })?
    } else {
        TransformSpec::default_for(kind)
    };
    match spec {
        Some(spec) if errors.is_empty() => Ok(TransformEntry {
            name: kind.to_string(),
            spec,
        }),
        _ => Err(errors),
    }
}

/// One step from a node to a child.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn seg_path(segs: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Runs `seed` on the node at `segs` (`Ok(None)` if it is absent) and converts the error.
fn decode<'a, S: DeserializeSeed<'a>>(
    text: &'a str,
    segs: &[Seg<'_>],
    seed: S,
) -> Result<Option<S::Value>, ConfigError> {
    let mut inner: Option<String> = None;
    let res = serde_saphyr::with_deserializer_from_str(text, |d| {
        Nav {
            segs,
            seed,
            inner: &mut inner,
        }
        .deserialize(d)
    });
    res.map_err(|e| to_config_error(&seg_path(segs), inner.as_deref(), &e))
}

/// Builds a [`ConfigError`] from a serde-saphyr error: the path joins the navigated prefix and
/// the path recorded inside the block; the location moves out of the message into its field.
fn to_config_error(prefix: &str, inner: Option<&str>, e: &serde_saphyr::Error) -> ConfigError {
    // serde_path_to_error writes `?` for a key it could not read; it says nothing useful.
    let inner = inner.map(|p| {
        p.split('.')
            .filter(|s| *s != "?")
            .collect::<Vec<_>>()
            .join(".")
    });
    let inner = inner.as_deref();
    let mut path = match inner {
        None | Some(".") | Some("") => prefix.to_string(),
        Some(p) if prefix.is_empty() => p.to_string(),
        Some(p) if p.starts_with('[') => format!("{prefix}{p}"),
        Some(p) => format!("{prefix}.{p}"),
    };
    let mut message = e.without_snippet().to_string();
    let location = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| SourceLocation {
            line: l.line(),
            column: l.column(),
        });
    if let Some(l) = location {
        let suffix = format!(" at line {}, column {}", l.line, l.column);
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    // Errors raised while reading a key (unknown fields, notably inside internally tagged enums
    // such as secret sources) leave the path at the parent; name the key itself.
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        let last = path.rsplit(['.', ']']).next().unwrap_or_default();
        if last != field {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(field);
        }
    }
    ConfigError::new(path, message).with_location(location)
}

/// Walks `segs` then runs `seed`, skipping every other node. `inner` receives the path of an
/// error inside the target node.
struct Nav<'s, 'p, S> {
    segs: &'s [Seg<'s>],
    seed: S,
    inner: &'p mut Option<String>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nav<'_, '_, S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.segs.split_first() {
            None => {
                let mut track = serde_path_to_error::Track::new();
                let res = self
                    .seed
                    .deserialize(serde_path_to_error::Deserializer::new(d, &mut track));
                match res {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => {
                        *self.inner = Some(track.path().to_string());
                        Err(e)
                    }
                }
            }
            Some((Seg::Key(k), rest)) => d.deserialize_map(NavVisitor {
                step: *k,
                next: Nav {
                    segs: rest,
                    seed: self.seed,
                    inner: self.inner,
                },
            }),
            Some((Seg::Index(i), rest)) => d.deserialize_seq(NavVisitor {
                step: *i,
                next: Nav {
                    segs: rest,
                    seed: self.seed,
                    inner: self.inner,
                },
            }),
        }
    }
}

struct NavVisitor<'s, 'p, T, S> {
    step: T,
    next: Nav<'s, 'p, S>,
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for NavVisitor<'_, '_, &str, S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a mapping containing `{}`", self.step)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut next = Some(self.next);
        let mut out = None;
        while let Some(key) = map.next_key::<String>()? {
            match next.take() {
                Some(nav) if key == self.step => out = map.next_value_seed(nav)?,
                other => {
                    next = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for NavVisitor<'_, '_, usize, S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence with an element {}", self.step)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        for _ in 0..self.step {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(None);
            }
        }
        let out = seq.next_element_seed(self.next)?.flatten();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

fn span_location<T>(s: &Spanned<T>) -> Option<SourceLocation> {
    let l = s.referenced;
    (l.line() > 0).then(|| SourceLocation {
        line: l.line(),
        column: l.column(),
    })
}

/// The top-level keys (with locations) and the length of `transforms`.
#[derive(Default)]
struct TopLevel {
    keys: Vec<(String, Option<SourceLocation>)>,
    transforms_len: usize,
}

impl<'de> de::Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of configuration blocks")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut top = TopLevel::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if key.value == "transforms" {
                        top.transforms_len = map
                            .next_value::<Option<Vec<IgnoredAny>>>()?
                            .map_or(0, |v| v.len());
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                    let loc = span_location(&key);
                    top.keys.push((key.value, loc));
                }
                Ok(top)
            }
        }
        d.deserialize_map(V)
    }
}

/// What a transform entry holds apart from its config.
#[derive(Default)]
struct EntryHead {
    name: Option<(String, Option<SourceLocation>)>,
    has_config: bool,
    unknown_keys: Vec<(String, Option<SourceLocation>)>,
}

struct EntryHeadSeed;

impl<'de> DeserializeSeed<'de> for EntryHeadSeed {
    type Value = EntryHead;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<EntryHead, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntryHeadSeed {
    type Value = EntryHead;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a transform entry with `name` and `config`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryHead, A::Error> {
        let mut head = EntryHead::default();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            match key.value.as_str() {
                "name" => {
                    let v = map.next_value::<Spanned<String>>()?;
                    let loc = span_location(&v);
                    head.name = Some((v.value, loc));
                }
                "config" => {
                    head.has_config = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    let loc = span_location(&key);
                    head.unknown_keys.push((key.value, loc));
                }
            }
        }
        Ok(head)
    }
}
