//! The request as the model sees it: a JSON envelope with per-field caps (docs' "Envelope
//! Limits"). Security-relevant headers come first so that junk headers cannot push them out of
//! the budget; every cut leaves a warning the model is told to weigh.

use std::collections::BTreeMap;

use serde::Serialize;

pub const MAX_URL: usize = 2048;
pub const MAX_HEADER_VALUE: usize = 512;
pub const MAX_HEADERS_TOTAL: usize = 4096;
pub const MAX_BODY: usize = 16384;

/// Emitted first, in this order; the rest follow alphabetically.
const PRIORITY: [&str; 11] = [
    "Host",
    "Origin",
    "Referer",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Transfer-Encoding",
    "Authorization",
    "Cookie",
];

#[derive(Debug, Serialize)]
pub struct Envelope {
    pub method: String,
    pub url: String,
    pub host: String,
    pub headers: Vec<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multipart_summary: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The parts of a request the envelope shows.
pub struct Input<'a> {
    pub method: &'a str,
    /// Origin-form path and query.
    pub url: &'a str,
    /// The host as the client named it (with port, if any).
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

pub fn build(input: &Input<'_>) -> Envelope {
    let mut warnings = Vec::new();
    let url = cap_str(input.url, MAX_URL, || {
        format!(
            "url truncated to {MAX_URL} bytes; original {} bytes",
            input.url.len()
        )
    })
    .map_or_else(
        |(cut, w)| {
            warnings.push(w);
            cut
        },
        str::to_string,
    );
    let headers = headers(input, &mut warnings);
    let (body, multipart_summary) = body(input, &mut warnings);
    Envelope {
        method: input.method.to_string(),
        url,
        host: input.host.to_string(),
        headers,
        body,
        warnings,
        multipart_summary,
    }
}

/// `Ok(s)` when it fits, else the longest prefix on a char boundary and the warning.
fn cap_str(
    s: &str,
    max: usize,
    warning: impl FnOnce() -> String,
) -> Result<&str, (String, String)> {
    if s.len() <= max {
        return Ok(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Err((s[..end].to_string(), warning()))
}

/// Canonical name (`x-api-key` → `X-Api-Key`) → values joined with `", "`.
fn grouped(map: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in map {
        if name == http::header::HOST {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes());
        out.entry(crate::transform::headers::canonical_name(name.as_str()))
            .and_modify(|s| {
                s.push_str(", ");
                s.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    out
}

fn headers(input: &Input<'_>, warnings: &mut Vec<String>) -> Vec<Header> {
    let mut all = grouped(input.headers);
    let mut ordered: Vec<(String, String)> = vec![("Host".into(), input.host.to_string())];
    for p in PRIORITY.iter().skip(1) {
        if let Some(v) = all.remove(*p) {
            ordered.push(((*p).to_string(), v));
        }
    }
    ordered.extend(all);
    let mut out = Vec::with_capacity(ordered.len());
    let mut used = 0usize;
    for (name, value) in ordered {
        let value = match cap_str(&value, MAX_HEADER_VALUE, String::new) {
            Ok(v) => v.to_string(),
            Err((cut, _)) => format!("{cut}... [truncated, original {} bytes]", value.len()),
        };
        if used + name.len() + value.len() > MAX_HEADERS_TOTAL {
            warnings.push(format!(
                "headers truncated to fit {MAX_HEADERS_TOTAL} byte budget"
            ));
            break;
        }
        used += name.len() + value.len();
        out.push(Header { name, value });
    }
    out
}

fn body(input: &Input<'_>, warnings: &mut Vec<String>) -> (Option<String>, Option<String>) {
    if input.body.is_empty() {
        return (None, None);
    }
    let truncated = input.body.len() > MAX_BODY;
    let shown = &input.body[..input.body.len().min(MAX_BODY)];
    let text = match std::str::from_utf8(shown) {
        Ok(t) => t,
        // The cap may split a multi-byte character: that tail is not a reason to hide the body.
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&shown[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => {
            warnings.push("body omitted: contains non-UTF-8 bytes".into());
            return (None, None);
        }
    };
    let mut summary = None;
    if truncated {
        warnings.push(format!(
            "body truncated to {MAX_BODY} bytes; content beyond this cap was not shown"
        ));
        let multipart = input
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/")
            });
        if multipart {
            summary = Some(format!(
                "multipart body of {} bytes; parts beyond the first {MAX_BODY} bytes were not shown",
                input.body.len()
            ));
        }
    }
    (Some(text.to_string()), summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn env(headers: &HeaderMap, body: &[u8], url: &str) -> Envelope {
        build(&Input {
            method: "POST",
            url,
            host: "api.test:8443",
            headers,
            body,
        })
    }

    #[test]
    fn priority_headers_first_then_alphabetical_joined_and_capped() {
        let mut h = HeaderMap::new();
        h.insert("zeta", HeaderValue::from_static("z"));
        h.append("accept", HeaderValue::from_static("a/1"));
        h.append("accept", HeaderValue::from_static("a/2"));
        h.insert("cookie", HeaderValue::from_static("c=1"));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer proxy-token"),
        );
        h.insert("x-long", HeaderValue::from_str(&"v".repeat(600)).unwrap());
        let e = env(&h, b"", "/x?y=1");
        let names: Vec<&str> = e.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Host",
                "Authorization",
                "Cookie",
                "Accept",
                "X-Long",
                "Zeta"
            ]
        );
        assert_eq!(e.headers[0].value, "api.test:8443");
        assert_eq!(e.headers[3].value, "a/1, a/2");
        assert_eq!(
            e.headers[4].value,
            format!("{}... [truncated, original 600 bytes]", "v".repeat(512))
        );
        assert!(e.body.is_none() && e.warnings.is_empty());
    }

    #[test]
    fn header_budget_keeps_security_headers() {
        let mut h = HeaderMap::new();
        for i in 0..40 {
            h.insert(
                http::HeaderName::from_bytes(format!("a-junk-{i:02}").as_bytes()).unwrap(),
                HeaderValue::from_str(&"j".repeat(200)).unwrap(),
            );
        }
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        let e = env(&h, b"", "/");
        assert_eq!(e.headers[1].name, "Authorization");
        assert!(e.headers.len() < 42);
        assert_eq!(e.warnings, ["headers truncated to fit 4096 byte budget"]);
    }

    #[test]
    fn body_and_url_caps() {
        let h = HeaderMap::new();
        let long_url = format!("/{}", "u".repeat(3000));
        let e = env(&h, &vec![b'b'; MAX_BODY + 5], &long_url);
        assert_eq!(e.url.len(), MAX_URL);
        assert_eq!(e.body.as_ref().unwrap().len(), MAX_BODY);
        assert_eq!(
            e.warnings,
            [
                "url truncated to 2048 bytes; original 3001 bytes",
                "body truncated to 16384 bytes; content beyond this cap was not shown"
            ]
        );
        let e = env(&h, &[0xff, 0xfe, b'x'], "/");
        assert!(e.body.is_none());
        assert_eq!(e.warnings, ["body omitted: contains non-UTF-8 bytes"]);
    }

    #[test]
    fn multipart_over_cap_gets_a_summary() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        let e = env(&h, &vec![b'm'; MAX_BODY + 1], "/");
        assert!(e.multipart_summary.unwrap().contains("16385 bytes"));
        let json = serde_json::to_value(env(&h, b"{}", "/")).unwrap();
        assert!(json.get("multipart_summary").is_none() && json.get("warnings").is_none());
    }
}
