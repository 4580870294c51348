//! What `policy test` is asked: requests (`[METHOD] URL`), headers and an identity.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::OpsError;

/// One request to judge.
#[derive(Debug, Clone)]
pub struct DryRequest {
    pub method: Method,
    /// Absolute: `scheme://authority/path?query`.
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl DryRequest {
    /// `GET https://host/path`, as printed.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

/// Whose pipeline judges a request (`--identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    User(String),
    Uid(u32),
    /// An `intercept.policies` entry by its `name`.
    Policy(String),
}

impl Identity {
    pub fn parse(s: &str) -> Result<Self, OpsError> {
        let bad = || {
            OpsError::Usage(format!(
                "--identity {s:?}: expected user:NAME, uid:N or policy:NAME"
            ))
        };
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "user" => Ok(Identity::User(name.to_string())),
            "uid" => name.parse().map(Identity::Uid).map_err(|_| bad()),
            "policy" => Ok(Identity::Policy(name.to_string())),
            _ => Err(bad()),
        }
    }
}

/// `["GET", "https://a/x", "https://b/"]` or `["GET https://a/x"]` → requests; a URL without
/// a method before it is a GET.
pub fn parse_requests(args: &[String], headers: &[String]) -> Result<Vec<DryRequest>, OpsError> {
    let headers = parse_headers(headers)?;
    let words: Vec<&str> = args.iter().flat_map(|a| a.split_whitespace()).collect();
    let mut out = Vec::new();
    let mut method: Option<Method> = None;
    for w in words {
        if w.contains("://") {
            let uri: Uri = w
                .parse()
                .map_err(|e| OpsError::Usage(format!("request URL {w:?}: {e}")))?;
            if uri.scheme_str().is_none_or(|s| s != "http" && s != "https") {
                return Err(OpsError::Usage(format!(
                    "request URL {w:?}: the scheme must be http or https"
                )));
            }
            out.push(DryRequest {
                method: method.take().unwrap_or(Method::GET),
                uri,
                headers: headers.clone(),
            });
        } else if method.is_none() && is_method(w) {
            method = Some(
                Method::from_bytes(w.as_bytes())
                    .map_err(|_| OpsError::Usage(format!("{w:?} is not a method")))?,
            );
        } else {
            return Err(OpsError::Usage(format!(
                "request {w:?}: expected [METHOD] URL, e.g. GET https://api.github.com/repos/x"
            )));
        }
    }
    if let Some(m) = method {
        return Err(OpsError::Usage(format!("method {m} has no URL after it")));
    }
    Ok(out)
}

fn is_method(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase())
}

fn parse_headers(headers: &[String]) -> Result<HeaderMap, OpsError> {
    let mut map = HeaderMap::new();
    for h in headers {
        let bad = |why: &str| OpsError::Usage(format!("--header: {why} (expected `Name: value`)"));
        let (name, value) = h.split_once(':').ok_or_else(|| bad("no `:`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| bad("invalid header name"))?;
        // The value is never echoed: it may be a placeholder or, by mistake, a real credential.
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("invalid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn methods_urls_and_quoted_words() {
        let r = parse_requests(
            &words(&[
                "GET https://a.test/x",
                "POST",
                "http://b.test:8080/y?q=1",
                "https://c.test",
            ]),
            &words(&["X-Test: 1"]),
        )
        .unwrap();
        let d: Vec<String> = r.iter().map(DryRequest::describe).collect();
        assert_eq!(
            d,
            [
                "GET https://a.test/x",
                "POST http://b.test:8080/y?q=1",
                "GET https://c.test/"
            ]
        );
        assert_eq!(r[1].headers["x-test"], "1");
    }

    #[test]
    fn bad_requests_are_named() {
        let e = |a: &[&str]| parse_requests(&words(a), &[]).unwrap_err().to_string();
        assert!(e(&["GET"]).contains("no URL"), "{}", e(&["GET"]));
        assert!(e(&["api.test/x"]).contains("expected [METHOD] URL"));
        assert!(e(&["ftp://a.test/"]).contains("http or https"));
        let h = parse_requests(&words(&["https://a.test/"]), &words(&["NoColon"])).unwrap_err();
        assert!(h.to_string().contains("--header"));
    }

    #[test]
    fn identities() {
        assert_eq!(
            Identity::parse("user:ci").unwrap(),
            Identity::User("ci".into())
        );
        assert_eq!(Identity::parse("uid:1001").unwrap(), Identity::Uid(1001));
        assert_eq!(
            Identity::parse("policy:build").unwrap(),
            Identity::Policy("build".into())
        );
        assert!(Identity::parse("ci").is_err());
        assert!(Identity::parse("uid:x").is_err());
        assert!(Identity::parse("group:x").is_err());
    }
}
