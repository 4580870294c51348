//! Header helpers shared by transforms.

/// Go's `CanonicalMIMEHeaderKey`: `x-request-id` → `X-Request-Id`. Used for annotation keys
/// and `stripped_headers` so audit output matches iron-proxy's.
pub fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical() {
        assert_eq!(super::canonical_name("x-request-id"), "X-Request-Id");
        assert_eq!(super::canonical_name("AUTHORIZATION"), "Authorization");
    }
}
