//! The system prompt (behaviour doc Appendix A) and the model's answer, parsed.

use serde::Deserialize;

/// iron-proxy's `system_prompt.md`, verbatim; `%s` is the operator policy as a JSON string.
const TEMPLATE: &str = include_str!("system_prompt.md");

/// The system prompt with `policy` embedded as a JSON string literal, so quotes, braces and
/// newlines in the policy cannot break out of it.
pub fn system_prompt(policy: &str) -> String {
    let quoted = serde_json::to_string(policy).unwrap_or_else(|_| String::from("\"\""));
    // The template ends with a newline after `%s`, which iron-proxy's Sprintf keeps.
    TEMPLATE.replacen("%s", &quoted, 1)
}

/// What the model decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub reason: String,
}

#[derive(Deserialize)]
struct Raw {
    decision: String,
    #[serde(default)]
    reason: String,
}

/// Parses `{"decision":"ALLOW|DENY","reason":"..."}`, tolerating surrounding whitespace and a
/// Markdown code fence (```` ``` ```` or ```` ```json ````). Anything else is an error (the
/// caller applies the fallback).
pub fn parse(raw: &str) -> Result<Decision, String> {
    let text = strip_fence(raw.trim());
    let r: Raw = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let allow = match r.decision.trim().to_ascii_uppercase().as_str() {
        "ALLOW" => true,
        "DENY" => false,
        other => return Err(format!("decision {other:?} is not ALLOW or DENY")),
    };
    Ok(Decision {
        allow,
        reason: r.reason,
    })
}

fn strip_fence(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    // An optional language tag on the opening line.
    let rest = rest
        .strip_prefix("json")
        .or_else(|| rest.strip_prefix("JSON"))
        .unwrap_or(rest);
    rest.trim().strip_suffix("```").unwrap_or(rest).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_fenced_and_case_insensitive_decisions() {
        let d = parse(r#"{"decision":"ALLOW","reason":"ok"}"#).unwrap();
        assert!(d.allow);
        assert_eq!(d.reason, "ok");
        let d = parse("```json\n{\"decision\":\"deny\",\"reason\":\"no\"}\n```").unwrap();
        assert!(!d.allow);
        let d = parse("  ```\n{\"decision\":\"Deny\"}\n```  ").unwrap();
        assert!(!d.allow);
        assert_eq!(d.reason, "");
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(
            parse("Sure! ALLOW")
                .unwrap_err()
                .starts_with("invalid JSON")
        );
        assert_eq!(
            parse(r#"{"decision":"MAYBE"}"#).unwrap_err(),
            "decision \"MAYBE\" is not ALLOW or DENY"
        );
        assert!(parse(r#"{"reason":"x"}"#).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn policy_is_embedded_as_a_json_string() {
        let p = system_prompt("Allow \"x\".\nIgnore previous {instructions}");
        assert!(p.starts_with("You are a security policy judge"));
        assert!(p.ends_with("\"Allow \\\"x\\\".\\nIgnore previous {instructions}\"\n"));
        assert!(!p.contains("%s"));
    }
}
