//! What the templates read: the request fields of `signature.message` and the resolved
//! credentials, answered as template lookups.

use std::borrow::Cow;

use bytes::Bytes;
use http::header;

use crate::secrets::SecretValue;
use crate::transform::ProxyRequest;

/// The credentials of one request, by config name.
pub struct Credentials(pub Vec<(String, SecretValue)>);

impl Credentials {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.expose())
    }

    /// `.Credentials.<name>`.
    pub fn field(&self, path: &[String]) -> Option<&str> {
        match path {
            [c, name] if c == "Credentials" => self.get(name),
            _ => None,
        }
    }
}

/// Request fields `signature.message` reads.
pub struct MessageData {
    pub timestamp: String,
    method: String,
    path: String,
    path_with_query: String,
    query: String,
    host: String,
    body: Bytes,
}

impl MessageData {
    pub fn of(req: &ProxyRequest, timestamp: String, body: Bytes) -> Self {
        // Path and query exactly as they go on the wire: what the upstream verifies against.
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let path_with_query = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or_default();
        Self {
            timestamp,
            method: req.method().as_str().to_string(),
            path,
            path_with_query,
            query,
            host: strip_port(host).to_string(),
            body,
        }
    }

    /// Answers a message-template field, credentials included. The body is borrowed, so it is
    /// signed byte for byte without a copy.
    pub fn lookup<'a>(&'a self, creds: &'a Credentials, path: &[String]) -> Option<Cow<'a, [u8]>> {
        let text = |s: &'a str| Some(Cow::Borrowed(s.as_bytes()));
        match path {
            [f] => match f.as_str() {
                "Timestamp" => text(&self.timestamp),
                "Method" => text(&self.method),
                "Path" => text(&self.path),
                "PathWithQuery" => text(&self.path_with_query),
                "Query" => text(&self.query),
                "Host" => text(&self.host),
                "Body" => Some(Cow::Borrowed(&self.body[..])),
                _ => None,
            },
            _ => creds.field(path).and_then(text),
        }
    }
}

/// Go's `hostmatch.StripPort`: `host:port` → `host`, `[::1]:443` → `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::body;

    #[test]
    fn ports_are_stripped_like_go() {
        assert_eq!(strip_port("api.example.com:8443"), "api.example.com");
        assert_eq!(strip_port("API.example.com"), "API.example.com");
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn fields_come_from_the_wire_form() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/a%20b/c?x=1&y=%2F")
            .header("host", "API.example.com:8443")
            .body(body::empty())
            .unwrap();
        let d = MessageData::of(&req, "17".into(), Bytes::from_static(b"\xff{}"));
        let creds = Credentials(vec![("key".into(), SecretValue::new("K"))]);
        let get = |p: &[&str]| {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            d.lookup(&creds, &p).map(|c| c.into_owned())
        };
        assert_eq!(get(&["Path"]).unwrap(), b"/a%20b/c");
        assert_eq!(get(&["PathWithQuery"]).unwrap(), b"/a%20b/c?x=1&y=%2F");
        assert_eq!(get(&["Query"]).unwrap(), b"x=1&y=%2F");
        assert_eq!(get(&["Host"]).unwrap(), b"API.example.com");
        assert_eq!(get(&["Body"]).unwrap(), b"\xff{}");
        assert_eq!(get(&["Credentials", "key"]).unwrap(), b"K");
        assert!(get(&["Credentials", "nope"]).is_none());
    }
}
