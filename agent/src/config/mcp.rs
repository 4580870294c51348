//! Top-level `mcp:` block (§14): a default-deny tool allowlist per MCP server.

use std::collections::HashSet;

use serde::Deserialize;

use super::ConfigError;
use super::transforms::{RuleConfig, check_regex, validate_required_rules};

pub const DEFAULT_MCP_ERROR_CODE: i64 = -32001;
pub const DEFAULT_MCP_ERROR_MESSAGE: &str = "blocked by iron-proxy policy";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub error: McpErrorConfig,
    /// No servers = policy disabled.
    pub servers: Vec<McpServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpErrorConfig {
    pub code: i64,
    pub message: String,
}

impl Default for McpErrorConfig {
    fn default() -> Self {
        Self {
            code: DEFAULT_MCP_ERROR_CODE,
            message: DEFAULT_MCP_ERROR_MESSAGE.to_string(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpServer {
    pub name: String,
    pub rules: Vec<RuleConfig>,
    pub tools: Vec<McpTool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpTool {
    pub name: String,
    /// All must hold for the call to be allowed.
    pub when: Vec<McpMatcher>,
}

/// One argument matcher: `path` plus exactly one of `equals`, `in`, `matches`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpMatcher {
    /// Dot path inside `params.arguments` (numeric segments index arrays).
    pub path: String,
    /// `equals: null` reads as unset, as in iron-proxy.
    pub equals: Option<serde_json::Value>,
    #[serde(rename = "in")]
    pub in_: Option<Vec<serde_json::Value>>,
    pub matches: Option<String>,
}

impl McpConfig {
    /// `path` is `mcp`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let mut names = HashSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let sp = format!("{path}.servers[{i}]");
            if s.name.trim().is_empty() {
                errors.push(ConfigError::new(format!("{sp}.name"), "is required"));
            } else if !names.insert(s.name.as_str()) {
                errors.push(ConfigError::new(
                    format!("{sp}.name"),
                    format!("duplicate server name {:?}", s.name),
                ));
            }
            validate_required_rules(&s.rules, &format!("{sp}.rules"), errors);
            let mut tools = HashSet::new();
            for (j, t) in s.tools.iter().enumerate() {
                let tp = format!("{sp}.tools[{j}]");
                if t.name.trim().is_empty() {
                    errors.push(ConfigError::new(format!("{tp}.name"), "is required"));
                } else if !tools.insert(t.name.as_str()) {
                    errors.push(ConfigError::new(
                        format!("{tp}.name"),
                        format!("duplicate tool name {:?}", t.name),
                    ));
                }
                for (k, w) in t.when.iter().enumerate() {
                    let wp = format!("{tp}.when[{k}]");
                    if w.path.trim().is_empty() {
                        errors.push(ConfigError::new(format!("{wp}.path"), "is required"));
                    }
                    let n = [w.equals.is_some(), w.in_.is_some(), w.matches.is_some()]
                        .iter()
                        .filter(|b| **b)
                        .count();
                    if n != 1 {
                        errors.push(ConfigError::new(
                            &wp,
                            "exactly one of equals, in, matches is required",
                        ));
                    }
                    if let Some(re) = &w.matches
                        && let Err(e) = check_regex(re)
                    {
                        errors.push(ConfigError::new(
                            format!("{wp}.matches"),
                            format!("invalid matches regex: {e}"),
                        ));
                    }
                }
            }
        }
    }
}
