//! `1password_connect`: resolves `op://vault/item/[section/]field` through a Connect server.
//!
//! Connect REST API: vault by name (`GET /v1/vaults?filter=name eq "<vault>"`) or id, item by
//! title (`GET /v1/vaults/{vid}/items?filter=title eq "<item>"`) or id, then the full item
//! (`GET /v1/vaults/{vid}/items/{iid}`) and the field by id or label, within the section when
//! the reference names one. The server URL and bearer token are read from the environment on
//! every fetch, so a rotated token is picked up by the next refresh.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::{SecretError, SecretResolver, SecretValue};
use crate::config::transforms::source::OnePasswordConnectSource;

const DEFAULT_HOST_ENV: &str = "OP_CONNECT_HOST";
const DEFAULT_TOKEN_ENV: &str = "OP_CONNECT_TOKEN";

/// An item with many fields and attachments metadata stays well below this.
const MAX_BODY: usize = 4 << 20;

/// Reads an environment variable. Injectable so tests never mutate the process environment.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env() -> EnvLookup {
    Arc::new(|k| std::env::var(k).ok())
}

/// Characters escaped in query values and path segments: everything but unreserved ones.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn resolver(s: &OnePasswordConnectSource) -> Result<Arc<dyn SecretResolver>, SecretError> {
    resolver_with_env(s, process_env())
}

/// As [`resolver`], reading `host_env` / `token_env` through `env`.
pub fn resolver_with_env(
    s: &OnePasswordConnectSource,
    env: EnvLookup,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    resolver_with(s, env, None)
}

/// As [`resolver_with_env`], with `tls` instead of the upstream trust store (system roots plus
/// `SSL_CERT_FILE`) for https Connect servers.
pub fn resolver_with(
    s: &OnePasswordConnectSource,
    env: EnvLookup,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    let reference = OpRef::parse(&s.secret_ref).ok_or_else(|| SecretError::Remote {
        source_name: s.secret_ref.clone(),
        reason: "invalid secret reference: expected op://vault/item/[section/]field".into(),
    })?;
    Ok(Arc::new(ConnectResolver {
        secret_ref: s.secret_ref.clone(),
        reference,
        host_env: nonempty_or(&s.host_env, DEFAULT_HOST_ENV),
        token_env: nonempty_or(&s.token_env, DEFAULT_TOKEN_ENV),
        env,
        tls,
        client: OnceCell::new(),
    }))
}

fn nonempty_or(v: &Option<String>, default: &str) -> String {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(default)
        .to_string()
}

/// `op://vault/item/[section/]field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpRef {
    pub vault: String,
    pub item: String,
    pub section: Option<String>,
    pub field: String,
}

impl OpRef {
    pub(crate) fn parse(r: &str) -> Option<Self> {
        let parts: Vec<&str> = r.strip_prefix("op://")?.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        match parts.as_slice() {
            [v, i, f] => Some(Self {
                vault: (*v).into(),
                item: (*i).into(),
                section: None,
                field: (*f).into(),
            }),
            [v, i, s, f] => Some(Self {
                vault: (*v).into(),
                item: (*i).into(),
                section: Some((*s).into()),
                field: (*f).into(),
            }),
            _ => None,
        }
    }
}

/// 1Password object ids are 26 lowercase base32 characters.
fn looks_like_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct ConnectResolver {
    secret_ref: String,
    reference: OpRef,
    host_env: String,
    token_env: String,
    env: EnvLookup,
    tls: Option<Arc<rustls::ClientConfig>>,
    client: OnceCell<HttpClient>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    sections: Vec<Section>,
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize)]
struct Section {
    id: String,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
struct Field {
    id: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    section: Option<SectionRef>,
}

#[derive(Deserialize)]
struct SectionRef {
    id: String,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    message: Option<String>,
}

/// Outcome of one GET: the body, or a non-success status with the server's message.
enum Reply {
    Ok(Bytes),
    Status(http::StatusCode, String),
}

impl ConnectResolver {
    fn err(&self, reason: impl Into<String>) -> SecretError {
        SecretError::Remote {
            source_name: self.secret_ref.clone(),
            reason: reason.into(),
        }
    }

    fn env_var(&self, name: &str, role: &str) -> Result<String, SecretError> {
        match (self.env)(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(self.err(format!(
                "1password_connect: env var {name} ({role}) is not set or empty"
            ))),
        }
    }

    async fn client(&self) -> Result<&HttpClient, SecretError> {
        self.client
            .get_or_try_init(|| async {
                let tls = match &self.tls {
                    Some(c) => c.clone(),
                    None => crate::tls::upstream_client_config()
                        .map_err(|e| self.err(format!("1password_connect: TLS setup: {e}")))?,
                };
                let mut tls = (*tls).clone();
                // hyper-rustls sets ALPN itself and panics if the config already has some.
                tls.alpn_protocols.clear();
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    // Connect servers usually run beside the agent on plain http.
                    .https_or_http()
                    .enable_http1()
                    .build();
                Ok(Client::builder(TokioExecutor::new()).build(connector))
            })
            .await
    }

    async fn get(
        &self,
        base: &str,
        token: &str,
        path_and_query: &str,
    ) -> Result<Reply, SecretError> {
        let client = self.client().await?;
        let uri = format!("{base}{path_and_query}");
        let req = http::Request::get(&uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| self.err(format!("1password_connect: bad request URL {uri:?}: {e}")))?;
        let resp = client.request(req).await.map_err(|e| {
            self.err(format!(
                "1password_connect: GET {uri}: {}",
                crate::telemetry::error_chain(&e)
            ))
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| self.err(format!("1password_connect: reading {uri}: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(Reply::Ok(body));
        }
        // Error bodies are `{"status":N,"message":"..."}`; they never carry item data.
        let msg = serde_json::from_slice::<ApiError>(&body)
            .ok()
            .and_then(|e| e.message)
            .unwrap_or_default();
        Ok(Reply::Status(status, cap(&msg, 200)))
    }

    /// GET expecting 2xx; anything else is an error naming `what`.
    async fn get_ok(
        &self,
        base: &str,
        token: &str,
        path_and_query: &str,
        what: &str,
    ) -> Result<Bytes, SecretError> {
        match self.get(base, token, path_and_query).await? {
            Reply::Ok(b) => Ok(b),
            Reply::Status(s, m) => Err(self.status_err(what, s, &m)),
        }
    }

    fn status_err(&self, what: &str, status: http::StatusCode, msg: &str) -> SecretError {
        let hint = match status.as_u16() {
            401 => " (check the Connect token)",
            403 => " (the token has no access to this vault)",
            _ => "",
        };
        if msg.is_empty() {
            self.err(format!("1password_connect: {what}: HTTP {status}{hint}"))
        } else {
            self.err(format!(
                "1password_connect: {what}: HTTP {status}: {msg}{hint}"
            ))
        }
    }

    /// Decodes a body without letting serde quote any of it into the error.
    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        body: &[u8],
        what: &str,
    ) -> Result<T, SecretError> {
        serde_json::from_slice(body).map_err(|e| {
            self.err(format!(
                "1password_connect: malformed {what} response ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// Resolves a vault or item: by id when it looks like one (falling back to the name on
    /// 404), else by a `filter` on the list endpoint, which must match exactly once.
    async fn lookup(
        &self,
        base: &str,
        token: &str,
        list_path: &str,
        attr: &str,
        query: &str,
        kind: &str,
    ) -> Result<String, SecretError> {
        if looks_like_id(query) {
            let path = format!("{list_path}/{}", enc(query));
            match self.get(base, token, &path).await? {
                Reply::Ok(b) => return Ok(self.decode::<Named>(&b, kind)?.id),
                Reply::Status(s, _) if s == http::StatusCode::NOT_FOUND => {}
                Reply::Status(s, m) => {
                    return Err(self.status_err(&format!("{kind} {query:?}"), s, &m));
                }
            }
        }
        let filter = format!("{attr} eq \"{}\"", query.replace('"', "\\\""));
        let path = format!("{list_path}?filter={}", enc(&filter));
        let body = self
            .get_ok(base, token, &path, &format!("listing {kind}s"))
            .await?;
        let mut found: Vec<Named> = self.decode(&body, &format!("{kind} list"))?;
        match found.len() {
            1 => Ok(found.remove(0).id),
            0 => Err(self.err(format!("1password_connect: {kind} {query:?} not found"))),
            n => Err(self.err(format!(
                "1password_connect: {n} {kind}s are named {query:?}; use the {kind} id"
            ))),
        }
    }

    fn pick_field(&self, item: Item) -> Result<SecretValue, SecretError> {
        let r = &self.reference;
        let section_id = match &r.section {
            None => None,
            Some(s) => {
                let sec = item
                    .sections
                    .iter()
                    .find(|x| x.id == *s)
                    .or_else(|| item.sections.iter().find(|x| x.label.as_deref() == Some(s)))
                    .ok_or_else(|| {
                        self.err(format!(
                            "1password_connect: section {s:?} not found in item"
                        ))
                    })?;
                Some(sec.id.clone())
            }
        };
        let in_scope = |f: &&Field| match &section_id {
            None => true,
            Some(sid) => f.section.as_ref().is_some_and(|s| s.id == *sid),
        };
        let by_id: Vec<&Field> = item
            .fields
            .iter()
            .filter(in_scope)
            .filter(|f| f.id == r.field)
            .collect();
        let candidates = if by_id.is_empty() {
            item.fields
                .iter()
                .filter(in_scope)
                .filter(|f| f.label.as_deref() == Some(r.field.as_str()))
                .collect()
        } else {
            by_id
        };
        let field = match candidates.as_slice() {
            [f] => *f,
            [] => {
                return Err(self.err(format!(
                    "1password_connect: field {:?} not found in item",
                    r.field
                )));
            }
            _ => {
                // Picking one at random could send the wrong credential.
                return Err(self.err(format!(
                    "1password_connect: {} fields are labelled {:?}; name the section or use the field id",
                    candidates.len(),
                    r.field
                )));
            }
        };
        match field.value.as_deref() {
            Some(v) if !v.is_empty() => Ok(SecretValue::new(v)),
            _ => Err(self.err(format!("1password_connect: field {:?} is empty", r.field))),
        }
    }
}

#[async_trait]
impl SecretResolver for ConnectResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let host = self.env_var(&self.host_env, "Connect server URL")?;
        let token = self.env_var(&self.token_env, "Connect token")?;
        let base = host.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(self.err(format!(
                "1password_connect: {} must be an http:// or https:// URL",
                self.host_env
            )));
        }
        let token = token.trim();
        let r = &self.reference;
        let vault_id = self
            .lookup(&base, token, "/v1/vaults", "name", &r.vault, "vault")
            .await?;
        let items = format!("/v1/vaults/{}/items", enc(&vault_id));
        let item_id = self
            .lookup(&base, token, &items, "title", &r.item, "item")
            .await?;
        let body = self
            .get_ok(
                &base,
                token,
                &format!("{items}/{}", enc(&item_id)),
                "reading item",
            )
            .await?;
        let item: Item = self.decode(&body, "item")?;
        self.pick_field(item)
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

fn cap(s: &str, max: usize) -> String {
    let s = s.replace(['\n', '\r'], " ");
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert_eq!(
            OpRef::parse("op://V/I/f"),
            Some(OpRef {
                vault: "V".into(),
                item: "I".into(),
                section: None,
                field: "f".into()
            })
        );
        assert_eq!(
            OpRef::parse("op://V/I/S/f").unwrap().section.as_deref(),
            Some("S")
        );
        for bad in ["op://V/I", "op://V//f", "V/I/f", "op://a/b/c/d/e"] {
            assert_eq!(OpRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(looks_like_id("abcdefghijklmnopqrstuvwxyz"));
        assert!(!looks_like_id("Engineering"));
    }
}
