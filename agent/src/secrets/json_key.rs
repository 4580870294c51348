//! `json_key`: pick one top-level string out of a JSON object value.

use super::{SecretError, SecretValue};

pub fn extract(raw: &SecretValue, key: &str) -> Result<SecretValue, SecretError> {
    let v: serde_json::Value =
        serde_json::from_str(raw.expose()).map_err(|_| SecretError::NotJson)?;
    let obj = v.as_object().ok_or(SecretError::NotJson)?;
    match obj.get(key) {
        None => Err(SecretError::JsonKeyMissing(key.to_string())),
        Some(serde_json::Value::String(s)) => Ok(SecretValue::new(s.as_str())),
        Some(other) => Err(SecretError::JsonKeyNotString {
            key: key.to_string(),
            kind: match other {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "bool",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::Array(_) => "array",
                _ => "object",
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_strings_only() {
        let v = SecretValue::new(r#"{"token":"abc","n":1}"#);
        assert_eq!(extract(&v, "token").unwrap().expose(), "abc");
        assert!(matches!(
            extract(&v, "n"),
            Err(SecretError::JsonKeyNotString { .. })
        ));
        assert!(matches!(
            extract(&v, "x"),
            Err(SecretError::JsonKeyMissing(_))
        ));
        assert!(matches!(
            extract(&SecretValue::new("nope"), "x"),
            Err(SecretError::NotJson)
        ));
        // Errors never carry the value.
        assert!(!format!("{:?}", extract(&v, "n")).contains("abc"));
    }
}
