//! A sync answer mapped to the pipeline, as iron-proxy builds it (behaviour doc §20.5):
//! `[allowlist{rules}]` when `rules` is present, then `[secrets{secrets}]` when `secrets` is,
//! then each `transforms[]` element `{name, config}` in order (nulls skipped). `mcp`, when
//! present, replaces the MCP policy. The result is decoded by the YAML config's own strict
//! decoder and checked by its validation, so a synced transform obeys exactly the rules of a
//! local one; building it is left to the reload swap, which rejects the whole answer on error.

use serde_json::Value;

use super::client::{SyncAnswer, non_null, object};
use crate::config::postgres::UpstreamConfig;
use crate::config::{self, ConfigError, McpConfig, TransformEntry};

/// What an answer changes. `None` fields keep what is in force.
#[derive(Debug, Default)]
pub struct Synced {
    /// The whole top-level pipeline, replacing the previous one.
    pub transforms: Option<Vec<TransformEntry>>,
    /// The MCP policy (`Some(None)`: disabled).
    pub mcp: Option<Option<McpConfig>>,
    /// The synced PostgreSQL upstreams (`Some(empty)`: none any more), layered onto the local
    /// block by the reload swap ([`super::postgres`]).
    pub postgres: Option<Vec<UpstreamConfig>>,
    /// Why synced PostgreSQL entries were skipped (unredacted: see [`redact`]).
    pub postgres_skipped: Vec<String>,
}

/// Why an answer was rejected (the old state and hash are kept).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Shape(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigError>),
}

/// Maps an answer carrying config (see [`SyncAnswer::has_config`]) to what it changes.
pub fn synced(answer: &SyncAnswer) -> Result<Synced, ApplyError> {
    decode(answer).map_err(|e| ApplyError::Shape(redact(&e.to_string(), answer)))
}

/// An error can quote a value it could not decode (`invalid type: string "..."`), and
/// a synced value may be a credential: every string the answer carries is masked.
pub fn redact(msg: &str, answer: &SyncAnswer) -> String {
    let mut msg = msg.to_string();
    let mut strings = Vec::new();
    for v in [
        &answer.rules,
        &answer.secrets,
        &answer.transforms,
        &answer.mcp,
        &answer.postgres,
    ]
    .into_iter()
    .flatten()
    {
        string_leaves(v, &mut strings);
    }
    // Longest first, so a value containing a shorter one is masked whole.
    strings.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in strings.iter().filter(|s| s.len() >= 4) {
        msg = msg.replace(s.as_str(), "[redacted]");
    }
    msg
}

fn string_leaves(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| string_leaves(x, out)),
        // Transform names and source types are vocabulary, not values: kept readable.
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "type"))
            .for_each(|(_, x)| string_leaves(x, out)),
        _ => {}
    }
}

fn decode(answer: &SyncAnswer) -> Result<Synced, ApplyError> {
    let mut doc = Vec::new();
    if answer.has_pipeline() {
        doc.push(("transforms", Value::Array(pipeline(answer)?)));
    }
    if let Some(mcp) = &answer.mcp {
        if !mcp.is_object() {
            return Err(ApplyError::Shape("mcp: expected an object".into()));
        }
        doc.push(("mcp", mcp.clone()));
    }
    // JSON is YAML: the config decoder reports unknown keys and bad values by field path.
    let text = object(doc).to_string();
    let cfg = config::parse(&text).map_err(|e| ApplyError::Config(e.0))?;
    let mut errors = Vec::new();
    for (i, entry) in cfg.transforms.iter().enumerate() {
        entry.validate(&format!("transforms[{i}]"), &mut errors);
    }
    if let Some(mcp) = &cfg.mcp {
        mcp.validate("mcp", &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApplyError::Config(errors));
    }
    let (postgres, postgres_skipped) = match &answer.postgres {
        Some(pg) => {
            let (ok, skipped) = super::postgres::entries(pg).map_err(ApplyError::Shape)?;
            (Some(ok), skipped)
        }
        None => (None, Vec::new()),
    };
    Ok(Synced {
        transforms: answer.has_pipeline().then_some(cfg.transforms),
        mcp: answer.mcp.as_ref().map(|_| cfg.mcp.clone()),
        postgres,
        postgres_skipped,
    })
}

/// The transform list the answer's pipeline fields stand for.
fn pipeline(answer: &SyncAnswer) -> Result<Vec<Value>, ApplyError> {
    let mut out = Vec::new();
    if let Some(rules) = &answer.rules {
        if !rules.is_array() {
            return Err(ApplyError::Shape("rules: expected an array".into()));
        }
        out.push(object(vec![
            ("name", "allowlist".into()),
            ("config", object(vec![("rules", rules.clone())])),
        ]));
    }
    if let Some(secrets) = &answer.secrets {
        let Some(items) = secrets.as_array() else {
            return Err(ApplyError::Shape("secrets: expected an array".into()));
        };
        out.push(object(vec![
            ("name", "secrets".into()),
            (
                "config",
                object(vec![("secrets", Value::Array(non_null(items)))]),
            ),
        ]));
    }
    if let Some(transforms) = &answer.transforms {
        let Some(items) = transforms.as_array() else {
            return Err(ApplyError::Shape("transforms: expected an array".into()));
        };
        for (i, t) in items.iter().enumerate() {
            if t.is_null() {
                continue;
            }
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                return Err(ApplyError::Shape(format!(
                    "transforms[{i}]: name is required"
                )));
            }
            out.push(t.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> SyncAnswer {
        SyncAnswer::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn rules_secrets_and_transforms_in_order() {
        let a = answer(
            r#"{"config_hash":"h","rules":[{"host":"a.test"}],
                "secrets":[{"source":{"type":"control_plane","value":"v"},
                            "inject":{"header":"X-K"},"rules":[{"host":"a.test"}]}],
                "transforms":[null,{"name":"annotate","config":{"annotations":[{"rules":[{"host":"a.test"}],"headers":["x-a"]}]}}]}"#,
        );
        let s = synced(&a).unwrap();
        let names: Vec<&str> = s
            .transforms
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["allowlist", "secrets", "annotate"]);
        assert!(s.mcp.is_none());
    }

    #[test]
    fn mcp_alone_keeps_the_pipeline() {
        let s = synced(&answer(r#"{"mcp":{"servers":[]}}"#)).unwrap();
        assert!(s.transforms.is_none());
        assert!(matches!(s.mcp, Some(Some(_))));
    }

    #[test]
    fn bad_answers_are_rejected_with_the_field() {
        let e = synced(&answer(r#"{"transforms":[{"config":{}}]}"#)).unwrap_err();
        assert_eq!(e.to_string(), "transforms[0]: name is required");
        let e = synced(&answer(r#"{"secrets":{"x":1}}"#)).unwrap_err();
        assert!(e.to_string().contains("secrets"), "{e}");
        let e = synced(&answer(
            r#"{"transforms":[{"name":"allowlist","config":{"bogus":1}}]}"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = synced(&answer(r#"{"transforms":[{"name":"nope","config":{}}]}"#)).unwrap_err();
        assert!(e.to_string().contains("transforms[0]"), "{e}");
    }

    #[test]
    fn a_value_quoted_by_the_decoder_is_masked() {
        let e = synced(&answer(
            r#"{"secrets":[{"source":{"type":"control_plane","value":"s3cr3t-v4lue"},
                "inject":"s3cr3t-v4lue"}]}"#,
        ))
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
