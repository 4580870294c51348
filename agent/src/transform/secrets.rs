//! `secrets`: the workload carries placeholders; the agent injects real values, or swaps a
//! proxy token for the real value, at egress. Annotations name the source (env var, file,
//! secret id) and the locations touched — never a value.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use regex::Regex;
use serde_json::{Value, json};

use crate::config::transforms::secrets::SecretMode;
use crate::config::transforms::{InjectConfig, ReplaceConfig, SecretEntry, SecretsConfig};
use crate::message::header_case::ConfiguredCasing;
use crate::policy::RuleSet;
use crate::secrets::{Secret, SecretRegistry, SecretValue};
use crate::template::Template;
use crate::transform::build::{Build, BuildContext, BuildProblem, TransformBuildError};
use crate::transform::headers::canonical_name;
use crate::transform::secret_identity::IdentityGate;
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict, body, uri};

pub struct Secrets {
    entries: Vec<Entry>,
}

struct Entry {
    secret: Arc<Secret>,
    /// `identities`: who may use the secret (`None`: everyone).
    identities: Option<IdentityGate>,
    /// Empty = every destination (documented behaviour; check-config warns).
    rules: RuleSet,
    mode: Mode,
}

enum Mode {
    Inject {
        target: InjectTarget,
        formatter: Option<Template>,
        require: bool,
    },
    Replace(Replace),
}

enum InjectTarget {
    Header(String),
    Query(String),
}

struct Replace {
    proxy_value: String,
    headers: HeaderScope,
    body: bool,
    path: bool,
    query: bool,
    require: bool,
    allow_connect_without_header: bool,
}

enum HeaderScope {
    All,
    Some {
        literals: Vec<String>,
        patterns: Vec<Regex>,
    },
}

impl Build for Secrets {
    type Config = SecretsConfig;

    fn build(cfg: &SecretsConfig, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        let mut entries = Vec::new();
        for (index, e) in cfg.secrets.iter().enumerate() {
            let entry = Self::entry(e, cx.secrets).map_err(|problem| {
                TransformBuildError::new(format!("secrets[{index}]"), problem)
            })?;
            entries.push(entry);
        }
        Ok(Self { entries })
    }
}

impl Secrets {
    fn entry(e: &SecretEntry, registry: &mut SecretRegistry) -> Result<Entry, BuildProblem> {
        let src = e
            .source
            .as_ref()
            .ok_or(BuildProblem::Invalid("source is required"))?;
        let secret = registry.register(src)?;
        let mode = e.mode().ok_or(BuildProblem::Invalid(
            "must specify either inject or replace",
        ))?;
        let mode = match mode {
            SecretMode::Inject(i) => inject_mode(&i)?,
            SecretMode::Replace(r) => Mode::Replace(replace_mode(&r)?),
        };
        Ok(Entry {
            secret,
            identities: e.identities.as_ref().map(IdentityGate::new),
            rules: RuleSet::from_configs(&e.rules),
            mode,
        })
    }
}

fn inject_mode(i: &InjectConfig) -> Result<Mode, BuildProblem> {
    let target = match (&i.header, &i.query_param) {
        (Some(h), None) => InjectTarget::Header(h.clone()),
        (None, Some(q)) => InjectTarget::Query(q.clone()),
        _ => {
            return Err(BuildProblem::Invalid(
                "inject must specify exactly one of header or query_param",
            ));
        }
    };
    // The formatter shapes header values only (a query value is set as is, like iron-proxy).
    let formatter = match &i.formatter {
        Some(_) if matches!(target, InjectTarget::Query(_)) => None,
        Some(f) => Some(Template::parse(f, &["Value"]).map_err(BuildProblem::FormatterTemplate)?),
        None => None,
    };
    Ok(Mode::Inject {
        target,
        formatter,
        require: i.require,
    })
}

fn replace_mode(r: &ReplaceConfig) -> Result<Replace, BuildProblem> {
    let headers = if r.match_headers.is_empty() {
        HeaderScope::All
    } else {
        let mut literals = Vec::new();
        let mut patterns = Vec::new();
        for h in &r.match_headers {
            match h.strip_prefix('/').and_then(|x| x.strip_suffix('/')) {
                Some(re) if h.len() >= 2 => {
                    patterns.push(Regex::new(&format!("(?i){re}")).map_err(|source| {
                        BuildProblem::Regex {
                            pattern: h.clone(),
                            source,
                        }
                    })?)
                }
                _ => literals.push(h.clone()),
            }
        }
        HeaderScope::Some { literals, patterns }
    };
    Ok(Replace {
        proxy_value: r.proxy_value.clone(),
        headers,
        body: r.match_body,
        path: r.match_path,
        query: r.match_query,
        require: r.require,
        allow_connect_without_header: r.allow_connect_without_header,
    })
}

/// What one request's pass over the entries did, for the annotations.
#[derive(Default)]
struct Report {
    swapped: Vec<Value>,
    injected: Vec<Value>,
    unavailable: Vec<String>,
}

#[async_trait]
impl Transform for Secrets {
    fn name(&self) -> &str {
        "secrets"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        let mut report = Report::default();
        for e in &self.entries {
            if !e.rules.is_empty() && !e.rules.matches(&cx.match_input(req)) {
                continue;
            }
            let name = e.secret.display_name().to_string();
            if let Some(gate) = &e.identities
                && !gate.admits(&cx.caller)
            {
                // Another identity's placeholder: refused before the value is even read, so it
                // is never injected. An inject entry simply does not apply to this caller.
                if let Mode::Replace(r) = &e.mode
                    && carries_placeholder(cx, req, r).await?
                {
                    cx.annotate("rejected", name);
                    cx.annotate("reject_reason", "identity_mismatch");
                    return Ok(Verdict::Reject(None));
                }
                continue;
            }
            let value = match e.secret.current() {
                Ok(v) => v,
                Err(_) => {
                    let require = match &e.mode {
                        Mode::Inject { require, .. } => *require,
                        Mode::Replace(r) => r.require,
                    };
                    if require {
                        cx.annotate("rejected", name);
                        cx.annotate("reject_reason", "secret_unavailable");
                        return Ok(Verdict::Reject(None));
                    }
                    report.unavailable.push(name);
                    continue;
                }
            };
            match &e.mode {
                Mode::Inject {
                    target, formatter, ..
                } => {
                    let loc = inject(req, target, formatter.as_ref(), &value)?;
                    report
                        .injected
                        .push(json!({"secret": name, "locations": [loc]}));
                }
                Mode::Replace(r) => {
                    let locations = replace(cx, req, r, &value).await?;
                    if locations.is_empty() {
                        if r.require && !connect_exempt(req, r) {
                            cx.annotate("rejected", name);
                            return Ok(Verdict::Reject(None));
                        }
                    } else {
                        report
                            .swapped
                            .push(json!({"secret": name, "locations": locations}));
                    }
                }
            }
        }
        if !report.swapped.is_empty() {
            cx.annotate("swapped", report.swapped);
        }
        if !report.injected.is_empty() {
            cx.annotate("injected", report.injected);
        }
        if !report.unavailable.is_empty() {
            cx.annotate("secret_unavailable", report.unavailable);
        }
        Ok(Verdict::Continue)
    }
}

/// Whether the request carries `r`'s placeholder where `r` would replace it (the placeholder is
/// "replaced" by itself, so nothing changes where it is absent).
async fn carries_placeholder(
    cx: &RequestCx,
    req: &mut ProxyRequest,
    r: &Replace,
) -> Result<bool, TransformError> {
    let same = SecretValue::new(r.proxy_value.as_str());
    Ok(!replace(cx, req, r, &same).await?.is_empty())
}

fn header_value(v: &str) -> Result<HeaderValue, TransformError> {
    // The value itself is never part of the error.
    HeaderValue::from_str(v)
        .map_err(|_| TransformError::Invalid("secret value is not a valid header value"))
}

fn inject(
    req: &mut ProxyRequest,
    target: &InjectTarget,
    formatter: Option<&Template>,
    value: &SecretValue,
) -> Result<String, TransformError> {
    let rendered = match formatter {
        Some(t) => t
            .render(&|p: &[String]| {
                (p.len() == 1 && p[0] == "Value").then(|| value.expose().to_string())
            })
            .map_err(TransformError::Formatter)?,
        None => value.expose().to_string(),
    };
    match target {
        InjectTarget::Header(h) => {
            let name = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| TransformError::HeaderName(h.clone()))?;
            req.headers_mut().remove(&name);
            req.headers_mut().insert(name, header_value(&rendered)?);
            ConfiguredCasing::insert(req, h);
            Ok(format!("header:{h}"))
        }
        InjectTarget::Query(q) => {
            let mut pairs = uri::query_pairs(req);
            pairs.retain(|(k, _)| k != q);
            pairs.push((q.clone(), rendered));
            uri::set_query_pairs(req, pairs)?;
            Ok(format!("query:{q}"))
        }
    }
}

async fn replace(
    cx: &RequestCx,
    req: &mut ProxyRequest,
    r: &Replace,
    value: &SecretValue,
) -> Result<Vec<String>, TransformError> {
    let p = r.proxy_value.as_str();
    let real = value.expose();
    let mut locations = Vec::new();
    if p.is_empty() {
        return Ok(locations);
    }
    replace_in_headers(req, &r.headers, p, real, &mut locations)?;
    if r.query {
        replace_in_query(req, p, real, &mut locations)?;
    }
    if r.path {
        let decoded = body::decoded_path(req).to_string();
        if decoded.contains(p) {
            uri::set_path(req, &decoded.replace(p, real))?;
            locations.push("path".into());
        }
    }
    if r.body {
        let bytes = body::buffer_request(req, cx.request_body_limit).await?;
        if let Some(new) = replace_bytes(&bytes, p.as_bytes(), real.as_bytes()) {
            body::replace_request_body(req, Bytes::from(new));
            locations.push("body".into());
        }
    }
    Ok(locations)
}

/// Headers in scope (and Basic credentials inside Authorization).
fn replace_in_headers(
    req: &mut ProxyRequest,
    scope: &HeaderScope,
    p: &str,
    real: &str,
    locations: &mut Vec<String>,
) -> Result<(), TransformError> {
    let names: Vec<HeaderName> = req.headers().keys().cloned().collect();
    for name in names {
        let Some(location_name) = header_in_scope(scope, &name) else {
            continue;
        };
        let mut changed = false;
        let mut new_values = Vec::new();
        for v in req.headers().get_all(&name) {
            let Ok(s) = v.to_str() else {
                new_values.push(v.clone());
                continue;
            };
            let replaced = if name == http::header::AUTHORIZATION {
                swap_basic(s, p, real)
            } else {
                None
            };
            let replaced = replaced.or_else(|| s.contains(p).then(|| s.replace(p, real)));
            match replaced {
                Some(n) => {
                    changed = true;
                    new_values.push(header_value(&n)?);
                }
                None => new_values.push(v.clone()),
            }
        }
        if changed {
            req.headers_mut().remove(&name);
            for v in new_values {
                req.headers_mut().append(name.clone(), v);
            }
            if let Literal(configured) = &location_name {
                ConfiguredCasing::insert(req, configured);
            }
            locations.push(format!("header:{}", location_name.label()));
        }
    }
    Ok(())
}

fn replace_in_query(
    req: &mut ProxyRequest,
    p: &str,
    real: &str,
    locations: &mut Vec<String>,
) -> Result<(), TransformError> {
    let raw = req.uri().query().unwrap_or("");
    if !raw.contains(p) && !raw.contains(&form_encoded(p)) {
        return Ok(());
    }
    let mut pairs = uri::query_pairs(req);
    let mut keys = Vec::new();
    for (k, v) in pairs.iter_mut() {
        if v.contains(p) {
            *v = v.replace(p, real);
            keys.push(format!("query:{k}"));
        }
    }
    if !keys.is_empty() {
        uri::set_query_pairs(req, pairs)?;
        locations.extend(keys);
    }
    Ok(())
}

/// How a scanned header is named in annotations: configured literal casing, or canonical.
enum ScopeName {
    Literal(String),
    Canonical(String),
}
use ScopeName::Literal;

impl ScopeName {
    fn label(&self) -> &str {
        match self {
            ScopeName::Literal(s) | ScopeName::Canonical(s) => s,
        }
    }
}

/// `allow_connect_without_header`: a CONNECT carrying none of the entry's headers goes on.
fn connect_exempt(req: &ProxyRequest, r: &Replace) -> bool {
    r.allow_connect_without_header
        && req.method() == http::Method::CONNECT
        && !req
            .headers()
            .keys()
            .any(|k| header_in_scope(&r.headers, k).is_some())
}

fn header_in_scope(scope: &HeaderScope, name: &HeaderName) -> Option<ScopeName> {
    match scope {
        HeaderScope::All => Some(ScopeName::Canonical(canonical_name(name.as_str()))),
        HeaderScope::Some { literals, patterns } => {
            if let Some(l) = literals
                .iter()
                .find(|l| l.eq_ignore_ascii_case(name.as_str()))
            {
                return Some(ScopeName::Literal(l.clone()));
            }
            let canonical = canonical_name(name.as_str());
            patterns
                .iter()
                .any(|p| p.is_match(&canonical))
                .then_some(ScopeName::Canonical(canonical))
        }
    }
}

/// `Basic base64(user:pass)`: swap inside the decoded credentials and re-encode.
fn swap_basic(header: &str, p: &str, real: &str) -> Option<String> {
    let b64 = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    if !text.contains(p) {
        return None;
    }
    let swapped = text.replace(p, real);
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(swapped)
    ))
}

fn form_encoded(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn replace_bytes(hay: &[u8], needle: &[u8], rep: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    let mut found = false;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(rep);
            i += needle.len();
            found = true;
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_swap_and_bytes() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:tok-123")
        );
        let out = swap_basic(&h, "tok-123", "real").unwrap();
        assert_eq!(
            out,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:real")
            )
        );
        assert!(swap_basic("Bearer x", "x", "y").is_none());
        assert_eq!(
            replace_bytes(b"a-P-b-P", b"P", b"RR").unwrap(),
            b"a-RR-b-RR"
        );
        assert!(replace_bytes(b"abc", b"P", b"R").is_none());
    }

    #[tokio::test]
    async fn connect_without_the_matched_header_continues_only_when_allowed() {
        use crate::config::transforms::source::{ControlPlaneSource, SecretSource};
        use crate::identify::{ClientAddr, HostName};
        let entry = |allow: bool| SecretEntry {
            source: Some(SecretSource::ControlPlane(ControlPlaneSource {
                value: "real".into(),
                json_key: None,
            })),
            replace: Some(ReplaceConfig {
                proxy_value: "proxy-tok".into(),
                match_headers: vec!["X-Api-Key".into()],
                require: true,
                allow_connect_without_header: allow,
                ..Default::default()
            }),
            ..Default::default()
        };
        let run = |allow: bool, method: &'static str, header: Option<&'static str>| async move {
            let mut registry = SecretRegistry::default();
            let mint = std::sync::Arc::new(crate::mint::TokenHttp::detached());
            let mut bcx = BuildContext::new(&mut registry, &mint);
            let cfg = SecretsConfig {
                secrets: vec![entry(allow)],
            };
            let t = Secrets::build(&cfg, &mut bcx).unwrap();
            registry.resolve_all().await;
            let mut b = http::Request::builder()
                .method(method)
                .uri("http://a.test/");
            if let Some(v) = header {
                b = b.header("x-api-key", v);
            }
            let mut req = b.body(crate::transform::body::empty()).unwrap();
            let mut cx = RequestCx::new(
                HostName::new("a.test"),
                ClientAddr("127.0.0.1:1".parse().unwrap()),
                crate::transform::Mode::Mitm,
            );
            matches!(
                t.on_request(&mut cx, &mut req).await.unwrap(),
                Verdict::Continue
            )
        };
        assert!(
            !run(false, "CONNECT", None).await,
            "require rejects a bare CONNECT"
        );
        assert!(
            run(true, "CONNECT", None).await,
            "exempt without the header"
        );
        assert!(
            !run(true, "CONNECT", Some("other")).await,
            "carries the header: still required"
        );
        assert!(!run(true, "GET", None).await, "only CONNECT is exempt");
        assert!(run(true, "GET", Some("proxy-tok")).await);
    }
}
