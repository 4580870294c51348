//! Light Go `text/template` checks: balanced `{{ }}` actions and the fields they reference.
//! The real engine comes later; this only catches what would fail at iron-proxy's parse time.

/// The text of every `{{ ... }}` action, or an error for an unclosed or empty action.
pub fn actions(tpl: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = tpl;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let body_start = open + 2;
        let Some(close) = rest[body_start..].find("}}") else {
            return Err(format!(
                "unclosed action starting at offset {}",
                offset + open
            ));
        };
        let body = &rest[body_start..body_start + close];
        // `{{-` / `-}}` trim markers are Go syntax, not part of the pipeline.
        let trimmed = body.strip_prefix('-').unwrap_or(body);
        let trimmed = trimmed.strip_suffix('-').unwrap_or(trimmed).trim();
        if trimmed.is_empty() {
            return Err(format!(
                "missing value for command at offset {}",
                offset + open
            ));
        }
        if trimmed.starts_with("/*") && !trimmed.ends_with("*/") {
            return Err(format!("unclosed comment at offset {}", offset + open));
        }
        if body.contains("{{") {
            return Err(format!(
                "unexpected \"{{{{\" in action at offset {}",
                offset + open
            ));
        }
        out.push(trimmed);
        let consumed = body_start + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(out)
}

/// Field chains referenced with a leading dot (`.Value`, `.Credentials.key`), outside quotes.
pub fn field_refs(action: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = action.chars().collect();
    let mut i = 0;
    let mut prev = ' ';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            // Skip string literals so dots inside them are not read as fields.
            let quote = c;
            i += 1;
            while i < chars.len() && chars[i] != quote {
                if quote == '"' && chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            prev = quote;
            i += 1;
            continue;
        }
        let starts_field = c == '.'
            && !(prev.is_alphanumeric() || prev == '_' || prev == ')' || prev == '$')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphabetic() || *n == '_');
        if starts_field {
            let mut j = i;
            let mut s = String::new();
            while j < chars.len()
                && (chars[j] == '.' || chars[j].is_alphanumeric() || chars[j] == '_')
            {
                s.push(chars[j]);
                j += 1;
            }
            out.push(s.trim_start_matches('.').to_string());
            prev = chars[j.saturating_sub(1)];
            i = j;
            continue;
        }
        prev = c;
        i += 1;
    }
    out
}

/// Checks syntax and that every referenced field's first segment is in `allowed`.
/// Returns the referenced chains for further checks (e.g. `.Credentials.<name>`).
pub fn check(tpl: &str, allowed: &[&str]) -> Result<Vec<String>, String> {
    let mut refs = Vec::new();
    for action in actions(tpl)? {
        for field in field_refs(action) {
            let head = field.split('.').next().unwrap_or_default();
            if !allowed.contains(&head) {
                return Err(format!(
                    "can't evaluate field {head}: available fields are {}",
                    allowed
                        .iter()
                        .map(|a| format!(".{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            refs.push(field);
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_actions() {
        assert_eq!(actions("Bearer {{ .Value }}").unwrap(), vec![".Value"]);
        assert!(actions("Bearer {{ .Value ").is_err());
        assert!(actions("{{}}").is_err());
        assert_eq!(actions("no actions }}").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn field_references() {
        assert_eq!(
            field_refs(r#"base64 "x-access-token:" .Value"#),
            vec!["Value"]
        );
        assert_eq!(field_refs(".Credentials.key"), vec!["Credentials.key"]);
        assert_eq!(field_refs(r#"printf "%s.x" .Body"#), vec!["Body"]);
        assert!(check("{{.Nope}}", &["Value"]).is_err());
        assert!(check("{{ .Value }}", &["Value"]).is_ok());
    }
}
