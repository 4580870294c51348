//! Config-time template checks, backed by the runtime engine in [`crate::template`] so that
//! what validates is exactly what renders.

/// Checks syntax and that every referenced field is allowed (`Credentials` admits one name
/// below it). Returns the referenced field paths for further checks (e.g. `.Credentials.<name>`).
pub fn check(tpl: &str, allowed: &[&str]) -> Result<Vec<String>, String> {
    let patterns: Vec<String> = allowed
        .iter()
        .map(|a| {
            if *a == "Credentials" {
                "Credentials.*".to_string()
            } else {
                (*a).to_string()
            }
        })
        .collect();
    let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
    crate::template::Template::parse(tpl, &refs)
        .map(|t| t.field_refs())
        .map_err(|e| {
            let available = allowed
                .iter()
                .map(|a| format!(".{a}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{e} (available fields: {available})")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegates_to_the_engine() {
        assert_eq!(
            check("Bearer {{ .Value }}", &["Value"]).unwrap(),
            vec!["Value"]
        );
        assert!(
            check("{{ .Valu }}", &["Value"])
                .unwrap_err()
                .contains(".Value")
        );
        assert_eq!(
            check(
                "{{ .Credentials.key }}:{{ .Timestamp }}",
                &["Timestamp", "Credentials"]
            )
            .unwrap(),
            vec!["Credentials.key", "Timestamp"]
        );
        assert!(check("{{ .Value ", &["Value"]).is_err());
    }
}
