//! Request input: the JSON body extractor (415/413/400), a field validator that names every
//! failing field, pagination and the `labels[k]=v` filter.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use http::StatusCode;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, Details};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest identifier-like string (names, namespaces, foreign ids, hosts, header names).
pub const SHORT: usize = 255;
/// Longest free text (descriptions, templates, URLs).
pub const LONG: usize = 4096;
/// Longest write-only secret value.
pub const SECRET: usize = 64 * 1024;
/// Most entries in an array (rules, scopes, tags, ...).
pub const MAX_ITEMS: usize = 256;

/// A JSON request body: `Content-Type: application/json` (415 otherwise), at most
/// [`MAX_BODY`] bytes (413), syntactically valid JSON (400). An empty body is `null`.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let ct = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body exceeds {MAX_BODY} bytes"),
                ));
            }
            Err(_) => return Err(ApiError::bad_request("could not read the request body")),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Value::Null));
        }
        match ct.as_deref() {
            Some("application/json") => {}
            Some(ct) if ct.ends_with("+json") => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Content-Type must be application/json",
                ));
            }
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

impl JsonBody {
    /// The `data` object of an `/api/v1` body (400 when missing or not an object).
    pub fn data(self) -> ApiResult<Map<String, Value>> {
        match self.0 {
            Value::Object(mut m) => match m.remove("data") {
                Some(Value::Object(d)) => {
                    if let Some(k) = m.keys().next() {
                        return Err(ApiError::bad_request(format!(
                            "unknown top-level key `{k}`: attributes belong inside `data`"
                        )));
                    }
                    Ok(d)
                }
                Some(_) => Err(ApiError::bad_request("`data` must be an object")),
                None => Err(ApiError::bad_request("missing `data` object")),
            },
            Value::Null => Err(ApiError::bad_request("missing `data` object")),
            _ => Err(ApiError::bad_request("request body must be a JSON object")),
        }
    }

    /// A top-level object body (the `/v1/policies` API does not wrap in `data`).
    pub fn object(self) -> ApiResult<Map<String, Value>> {
        match self.0 {
            Value::Object(m) => Ok(m),
            Value::Null => Err(ApiError::bad_request("request body is empty")),
            _ => Err(ApiError::bad_request("request body must be a JSON object")),
        }
    }
}

/// Accumulated validation failures.
#[derive(Default, Debug)]
pub struct Errors(pub Details);

impl Errors {
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.0.entry(field.to_owned()).or_default().push(msg.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn check(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

/// A JSON object being validated, with the path used to name its fields in errors.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub at: &'a str,
}

pub fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    pub fn new(map: &'a Map<String, Value>, at: &'a str) -> Self {
        Self { map, at }
    }

    pub fn field(&self, key: &str) -> String {
        join(self.at, key)
    }

    /// Every key must be in `allowed`; `ignored` keys are accepted and dropped.
    pub fn check_keys(&self, allowed: &[&str], errs: &mut Errors) {
        for k in self.map.keys() {
            if !allowed.contains(&k.as_str()) {
                errs.add(&self.field(k), "is not a permitted attribute");
            }
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Present and not null.
    pub fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, want: &str, got: &Value, errs: &mut Errors) {
        errs.add(
            &self.field(key),
            format!("must be {want}, got {}", type_name(got)),
        );
    }

    /// Optional string: absent or null -> None; checked for type and length.
    pub fn string(&self, key: &str, max: usize, errs: &mut Errors) -> Option<String> {
        match self.present(key)? {
            Value::String(s) => {
                if s.chars().count() > max {
                    errs.add(
                        &self.field(key),
                        format!("is too long (maximum is {max} characters)"),
                    );
                    None
                } else {
                    Some(s.clone())
                }
            }
            other => {
                self.wrong(key, "a string", other, errs);
                None
            }
        }
    }

    /// Required non-blank string.
    pub fn req_string(&self, key: &str, max: usize, errs: &mut Errors) -> Option<String> {
        if self.present(key).is_none() {
            errs.add(&self.field(key), "can't be blank");
            return None;
        }
        let s = self.string(key, max, errs)?;
        if s.trim().is_empty() {
            errs.add(&self.field(key), "can't be blank");
            return None;
        }
        Some(s)
    }

    pub fn bool(&self, key: &str, errs: &mut Errors) -> Option<bool> {
        match self.present(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong(key, "a boolean", other, errs);
                None
            }
        }
    }

    pub fn int(&self, key: &str, min: i64, max: i64, errs: &mut Errors) -> Option<i64> {
        let v = self.present(key)?;
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(_) => {
                errs.add(&self.field(key), format!("must be between {min} and {max}"));
                None
            }
            None => {
                self.wrong(key, "an integer", v, errs);
                None
            }
        }
    }

    pub fn number(&self, key: &str, errs: &mut Errors) -> Option<f64> {
        let v = self.present(key)?;
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                self.wrong(key, "a number", v, errs);
                None
            }
        }
    }

    pub fn object(&self, key: &str, errs: &mut Errors) -> Option<&'a Map<String, Value>> {
        match self.present(key)? {
            Value::Object(m) => Some(m),
            other => {
                self.wrong(key, "an object", other, errs);
                None
            }
        }
    }

    pub fn array(&self, key: &str, errs: &mut Errors) -> Option<&'a Vec<Value>> {
        match self.present(key)? {
            Value::Array(a) if a.len() > MAX_ITEMS => {
                errs.add(
                    &self.field(key),
                    format!("has too many entries (maximum is {MAX_ITEMS})"),
                );
                None
            }
            Value::Array(a) => Some(a),
            other => {
                self.wrong(key, "an array", other, errs);
                None
            }
        }
    }

    /// Array of non-empty strings of at most `max` characters.
    pub fn strings(&self, key: &str, max: usize, errs: &mut Errors) -> Option<Vec<String>> {
        let arr = self.array(key, errs)?;
        let mut out = Vec::with_capacity(arr.len());
        let mut ok = true;
        for (i, v) in arr.iter().enumerate() {
            let f = format!("{}[{i}]", self.field(key));
            match v {
                Value::String(s) if s.trim().is_empty() => {
                    errs.add(&f, "can't be blank");
                    ok = false;
                }
                Value::String(s) if s.chars().count() > max => {
                    errs.add(&f, format!("is too long (maximum is {max} characters)"));
                    ok = false;
                }
                Value::String(s) => out.push(s.clone()),
                other => {
                    errs.add(&f, format!("must be a string, got {}", type_name(other)));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// `labels`: a string-keyed object of scalar values (at most 64 entries).
pub fn labels(o: Obj<'_>, errs: &mut Errors) -> Option<Map<String, Value>> {
    let m = o.object("labels", errs)?;
    let f = o.field("labels");
    if m.len() > 64 {
        errs.add(&f, "has too many entries (maximum is 64)");
        return None;
    }
    let mut ok = true;
    for (k, v) in m {
        if k.is_empty() || k.len() > SHORT {
            errs.add(&f, format!("key `{k}` must be 1 to {SHORT} characters"));
            ok = false;
        }
        match v {
            Value::Object(_) | Value::Array(_) => {
                errs.add(&format!("{f}.{k}"), "must be a scalar");
                ok = false;
            }
            Value::String(s) if s.len() > LONG => {
                errs.add(&format!("{f}.{k}"), "is too long");
                ok = false;
            }
            _ => {}
        }
    }
    ok.then(|| m.clone())
}

/// URL-safe identifier (namespace, foreign_id): only `A-Z a-z 0-9 - . _ ~`.
pub fn url_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Parsed query string of a list request.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub page: i64,
    pub limit: i64,
    pub params: BTreeMap<String, String>,
    /// `labels[k]=v` pairs.
    pub labels: Map<String, Value>,
}

pub fn parse_query(raw: Option<&str>) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        page: 1,
        limit: 50,
        ..Default::default()
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if let Some(rest) = k.strip_prefix("labels[") {
            let Some(key) = rest.strip_suffix(']') else {
                return Err(ApiError::bad_request(format!(
                    "malformed label filter `{k}`"
                )));
            };
            if key.is_empty() || key.contains(['[', ']', '"']) {
                return Err(ApiError::bad_request(format!(
                    "label filter `{k}`: label values must be scalars"
                )));
            }
            q.labels
                .insert(key.to_owned(), Value::String(v.into_owned()));
        } else if k == "labels" {
            return Err(ApiError::bad_request(
                "labels filter must be given as labels[key]=value",
            ));
        } else {
            q.params.insert(k.into_owned(), v.into_owned());
        }
    }
    let int = |name: &str| -> ApiResult<Option<i64>> {
        match q.params.get(name) {
            None => Ok(None),
            Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name} must be an integer, got `{s}`"))
            }),
        }
    };
    q.page = int("page")?.unwrap_or(1).max(1);
    q.limit = int("limit")?.unwrap_or(50).clamp(1, 200);
    Ok(q)
}

impl ListQuery {
    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.limit)
    }

    /// The `namespace` parameter, required on namespaced lists.
    pub fn namespace(&self) -> ApiResult<String> {
        match self.params.get("namespace") {
            Some(ns) if !ns.is_empty() => Ok(ns.clone()),
            _ => Err(ApiError::bad_request(
                "namespace query parameter is required",
            )),
        }
    }

    pub fn meta(&self, total: i64) -> Value {
        let pages = if total == 0 {
            0
        } else {
            (total + self.limit - 1) / self.limit
        };
        serde_json::json!({
            "page": self.page, "limit": self.limit, "total": total, "total_pages": pages
        })
    }
}

/// Proxy tags (`dev`, `env:prod`, `user:alice@example.com`): 1 to 255 characters, no
/// whitespace, control characters or commas; duplicates removed, order kept.
pub fn tags(o: Obj<'_>, key: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let list = o.strings(key, SHORT, errs)?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        if t.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            errs.add(
                &format!("{}[{i}]", o.field(key)),
                "must not contain whitespace or commas",
            );
        } else if !out.contains(&t) {
            out.push(t);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_clamps_and_rejects_non_integers() {
        let q = parse_query(Some("page=0&limit=1000")).unwrap();
        assert_eq!((q.page, q.limit), (1, 200));
        assert!(parse_query(Some("page=x")).is_err());
        let q = parse_query(Some("labels%5Bteam%5D=platform&namespace=a")).unwrap();
        assert_eq!(q.labels["team"], "platform");
        assert!(parse_query(Some("labels[a][b]=c")).is_err());
    }

    #[test]
    fn url_safe_ids() {
        assert!(url_safe("github-token.v1~_"));
        assert!(!url_safe("a/b"));
        assert!(!url_safe(""));
    }
}
