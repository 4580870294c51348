//! `1password_connect` against a fake Connect server on 127.0.0.1, and `1password` with a
//! stand-in `op` script. Environment and `PATH` go through constructor overrides, never the
//! test process's own environment.

// Helpers outside #[test] functions are not covered by clippy.toml's allow-*-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use iron_agent::config::SecretSource;
use iron_agent::config::transforms::source::{OnePasswordConnectSource, OnePasswordSource};
use iron_agent::secrets::onepassword::{self, OpCliOptions};
use iron_agent::secrets::onepassword_connect::{self, EnvLookup};
use iron_agent::secrets::{Secret, SecretError, SecretResolver};
use iron_agent::tls::{UpstreamRoots, upstream_client_config_from};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Every value a test could leak; no error string may contain any of them.
const SECRETS: &[&str] = &[
    "top-level-secret-1",
    "prod-secret-2",
    "staging-secret-3",
    "json-inner-secret-4",
    CONNECT_TOKEN,
    "op-cli-secret-1",
    "leaky-secret-2",
    OP_TOKEN,
];

fn assert_no_leak(e: &SecretError) {
    let shown = format!("{e} {e:?}");
    for s in SECRETS {
        assert!(!shown.contains(s), "error leaks a secret: {shown}");
    }
}

fn env_of(pairs: &[(&str, &str)]) -> EnvLookup {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |k| m.get(k).cloned())
}

// ---------------------------------------------------------------------------------------------
// fake Connect server

const CONNECT_TOKEN: &str = "connect-token-xyz";
const VAULT_ID: &str = "vaultidaaaaaaaaaaaaaaaaaaa";
const ITEM_ID: &str = "itemidbbbbbbbbbbbbbbbbbbbb";
const DUP_ITEM_ID: &str = "itemidcccccccccccccccccccc";
const DUP_ITEM_ID2: &str = "itemiddddddddddddddddddddd";

struct FakeConnect {
    url: String,
    /// Paths and queries seen, for asserting which lookups were made.
    log: Arc<Mutex<Vec<String>>>,
}

fn item() -> Value {
    json!({
        "id": ITEM_ID,
        "title": "OpenAI",
        "vault": {"id": VAULT_ID},
        "sections": [
            {"id": "sec1", "label": "Prod"},
            {"id": "sec2", "label": "Staging"},
            {"id": "sec3"}
        ],
        "fields": [
            {"id": "password", "label": "password", "type": "CONCEALED", "purpose": "PASSWORD",
             "value": "top-level-secret-1"},
            {"id": "fld-prod-key", "label": "credential", "type": "CONCEALED",
             "section": {"id": "sec1"}, "value": "prod-secret-2"},
            {"id": "fld-stg-key", "label": "credential", "type": "CONCEALED",
             "section": {"id": "sec2", "label": "Staging"}, "value": "staging-secret-3"},
            {"id": "blob", "label": "blob", "type": "STRING",
             "value": "{\"inner\":\"json-inner-secret-4\"}"},
            {"id": "notesPlain", "label": "notes", "type": "STRING", "purpose": "NOTES"}
        ]
    })
}

fn dup_item(id: &str) -> Value {
    json!({"id": id, "title": "Dup", "fields": [{"id": "f", "label": "f", "value": "x"}]})
}

/// `name eq "X"` → `X`.
fn filter_value(query: Option<&str>, attr: &str) -> Option<String> {
    let q = query?;
    let raw = q.strip_prefix("filter=")?;
    let f = percent_decode_str(raw).decode_utf8().ok()?;
    let v = f
        .strip_prefix(&format!("{attr} eq \""))?
        .strip_suffix('"')?;
    Some(v.replace("\\\"", "\""))
}

fn respond(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn route(req: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {CONNECT_TOKEN}")) {
        return respond(
            401,
            json!({"status": 401, "message": "Invalid token signature"}),
        );
    }
    let not_found = || respond(404, json!({"status": 404, "message": "Not found"}));
    let path: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let query = req.uri().query();
    let vaults = [json!({"id": VAULT_ID, "name": "Engineering"})];
    match path.as_slice() {
        ["v1", "vaults"] => {
            let name = filter_value(query, "name");
            let hits: Vec<Value> = vaults
                .iter()
                .filter(|v| name.as_deref().is_none_or(|n| v["name"] == n))
                .cloned()
                .collect();
            respond(200, Value::Array(hits))
        }
        ["v1", "vaults", VAULT_ID] => respond(200, vaults[0].clone()),
        ["v1", "vaults", _] => not_found(),
        ["v1", "vaults", VAULT_ID, "items"] => {
            let title = filter_value(query, "title");
            let all = [item(), dup_item(DUP_ITEM_ID), dup_item(DUP_ITEM_ID2)];
            let hits: Vec<Value> = all
                .iter()
                .filter(|i| title.as_deref().is_none_or(|t| i["title"] == t))
                .map(|i| json!({"id": i["id"], "title": i["title"]}))
                .collect();
            respond(200, Value::Array(hits))
        }
        ["v1", "vaults", VAULT_ID, "items", ITEM_ID] => respond(200, item()),
        ["v1", "vaults", VAULT_ID, "items", id] if *id == DUP_ITEM_ID => {
            respond(200, dup_item(DUP_ITEM_ID))
        }
        _ => not_found(),
    }
}

impl FakeConnect {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `tls`, serves https on 127.0.0.1.
    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        log.lock().unwrap().push(req.uri().to_string());
                        let resp = route(&req);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Self { url, log }
    }

    fn env(&self) -> EnvLookup {
        env_of(&[
            ("OP_CONNECT_HOST", &self.url),
            ("OP_CONNECT_TOKEN", CONNECT_TOKEN),
        ])
    }

    fn resolver(&self, secret_ref: &str) -> Arc<dyn SecretResolver> {
        onepassword_connect::resolver_with_env(&connect_source(secret_ref), self.env()).unwrap()
    }

    async fn get(&self, secret_ref: &str) -> Result<String, SecretError> {
        self.resolver(secret_ref)
            .fetch()
            .await
            .map(|v| v.expose().to_string())
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn connect_source(secret_ref: &str) -> OnePasswordConnectSource {
    OnePasswordConnectSource {
        secret_ref: secret_ref.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1password_connect

#[tokio::test]
async fn connect_vault_item_field() {
    let c = FakeConnect::start().await;
    assert_eq!(
        c.get("op://Engineering/OpenAI/password").await.unwrap(),
        "top-level-secret-1"
    );
    let log = c.take_log();
    assert_eq!(
        log,
        [
            "/v1/vaults?filter=name%20eq%20%22Engineering%22".to_string(),
            format!("/v1/vaults/{VAULT_ID}/items?filter=title%20eq%20%22OpenAI%22"),
            format!("/v1/vaults/{VAULT_ID}/items/{ITEM_ID}"),
        ]
    );
    // A trailing slash on the host is fine.
    let env = env_of(&[
        ("OP_CONNECT_HOST", &format!("{}/", c.url)),
        ("OP_CONNECT_TOKEN", CONNECT_TOKEN),
    ]);
    let r = onepassword_connect::resolver_with_env(
        &connect_source("op://Engineering/OpenAI/password"),
        env,
    )
    .unwrap();
    assert_eq!(r.fetch().await.unwrap().expose(), "top-level-secret-1");
}

#[tokio::test]
async fn connect_over_https() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let c = FakeConnect::start_with(Some(TlsAcceptor::from(Arc::new(server)))).await;
    let roots = UpstreamRoots {
        system: false,
        files: vec![],
        dirs: vec![],
        extra: vec![cert.der().clone()],
    };
    // The upstream config offers http/1.1 via ALPN; the resolver must cope with that.
    let tls = upstream_client_config_from(&roots, vec![b"http/1.1".to_vec()]).unwrap();
    let src = connect_source("op://Engineering/OpenAI/password");
    let r = onepassword_connect::resolver_with(&src, c.env(), Some(tls)).unwrap();
    assert_eq!(r.fetch().await.unwrap().expose(), "top-level-secret-1");

    // Not trusted (the store holds some other certificate): a TLS error, no secret.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    let roots = UpstreamRoots {
        extra: vec![other.der().clone()],
        ..roots
    };
    let tls = upstream_client_config_from(&roots, vec![]).unwrap();
    let r = onepassword_connect::resolver_with(&src, c.env(), Some(tls)).unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(
        e.to_string().contains("1password_connect: GET https://"),
        "{e}"
    );
    assert_no_leak(&e);
}

#[tokio::test]
async fn connect_sections_by_label_and_id() {
    let c = FakeConnect::start().await;
    assert_eq!(
        c.get("op://Engineering/OpenAI/Prod/credential")
            .await
            .unwrap(),
        "prod-secret-2"
    );
    assert_eq!(
        c.get("op://Engineering/OpenAI/sec2/credential")
            .await
            .unwrap(),
        "staging-secret-3"
    );
    // Same label in two sections and no section named: refuse rather than guess.
    let e = c
        .get("op://Engineering/OpenAI/credential")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("2 fields are labelled"), "{e}");
    assert_no_leak(&e);
    // A field that exists, but not in the named section.
    let e = c
        .get("op://Engineering/OpenAI/Prod/password")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    assert_no_leak(&e);
    let e = c
        .get("op://Engineering/OpenAI/Nope/credential")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("section \"Nope\" not found"), "{e}");
    assert_no_leak(&e);
}

#[tokio::test]
async fn connect_by_ids() {
    let c = FakeConnect::start().await;
    assert_eq!(
        c.get(&format!("op://{VAULT_ID}/{ITEM_ID}/fld-prod-key"))
            .await
            .unwrap(),
        "prod-secret-2"
    );
    let log = c.take_log();
    assert!(log.iter().all(|p| !p.contains("filter")), "{log:?}");
    // Field by id within a section given by label.
    assert_eq!(
        c.get(&format!("op://{VAULT_ID}/OpenAI/Staging/fld-stg-key"))
            .await
            .unwrap(),
        "staging-secret-3"
    );
}

#[tokio::test]
async fn connect_json_key_through_secret() {
    let c = FakeConnect::start().await;
    let cfg = OnePasswordConnectSource {
        json_key: Some("inner".into()),
        ..connect_source("op://Engineering/OpenAI/blob")
    };
    let r = onepassword_connect::resolver_with_env(&cfg, c.env()).unwrap();
    let s = Secret::with_resolver(
        &SecretSource::OnePasswordConnect(cfg),
        r,
        Default::default(),
    );
    s.refresh().await.unwrap();
    assert_eq!(s.current().unwrap().expose(), "json-inner-secret-4");
    assert_eq!(s.kind(), "1password_connect");
    assert_eq!(s.display_name(), "op://Engineering/OpenAI/blob");
}

#[tokio::test]
async fn connect_unknown_things_are_errors() {
    let c = FakeConnect::start().await;
    for (r, want) in [
        ("op://Engineering/OpenAI/nope", "field \"nope\" not found"),
        (
            "op://Engineering/Missing/password",
            "item \"Missing\" not found",
        ),
        (
            "op://Nowhere/OpenAI/password",
            "vault \"Nowhere\" not found",
        ),
        ("op://Engineering/Dup/f", "2 items are named \"Dup\""),
        ("op://Engineering/OpenAI/notes", "field \"notes\" is empty"),
        (
            "op://zzzzzzzzzzzzzzzzzzzzzzzzzz/OpenAI/password",
            "vault \"zzzzzzzzzzzzzzzzzzzzzzzzzz\" not found",
        ),
    ] {
        let e = c.get(r).await.unwrap_err();
        match &e {
            SecretError::Remote { source_name, .. } => assert_eq!(source_name, r),
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains(want), "{r}: {e}");
        assert_no_leak(&e);
    }
    // An invalid reference is refused when the resolver is built.
    let e = onepassword_connect::resolver_with_env(&connect_source("op://a/b"), c.env())
        .err()
        .unwrap();
    assert!(e.to_string().contains("invalid secret reference"), "{e}");
}

#[tokio::test]
async fn connect_wrong_token_and_missing_env() {
    let c = FakeConnect::start().await;
    let env = env_of(&[
        ("OP_CONNECT_HOST", &c.url),
        ("OP_CONNECT_TOKEN", "wrong-token-777"),
    ]);
    let r = onepassword_connect::resolver_with_env(
        &connect_source("op://Engineering/OpenAI/password"),
        env,
    )
    .unwrap();
    let e = r.fetch().await.unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("401") && s.contains("Invalid token signature"),
        "{s}"
    );
    assert!(!s.contains("wrong-token-777"), "{s}");
    assert_no_leak(&e);

    // Missing variables are named, including custom ones.
    let cfg = OnePasswordConnectSource {
        host_env: Some("MY_CONNECT_URL".into()),
        token_env: Some("MY_CONNECT_TOKEN".into()),
        ..connect_source("op://Engineering/OpenAI/password")
    };
    let r = onepassword_connect::resolver_with_env(&cfg, env_of(&[])).unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(e.to_string().contains("MY_CONNECT_URL"), "{e}");
    let r = onepassword_connect::resolver_with_env(&cfg, env_of(&[("MY_CONNECT_URL", &c.url)]))
        .unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(e.to_string().contains("MY_CONNECT_TOKEN"), "{e}");
    let r = onepassword_connect::resolver_with_env(
        &connect_source("op://Engineering/OpenAI/password"),
        env_of(&[("OP_CONNECT_TOKEN", CONNECT_TOKEN)]),
    )
    .unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(e.to_string().contains("OP_CONNECT_HOST"), "{e}");
    assert_no_leak(&e);

    // Unreachable server.
    let env = env_of(&[
        ("OP_CONNECT_HOST", "http://127.0.0.1:1"),
        ("OP_CONNECT_TOKEN", CONNECT_TOKEN),
    ]);
    let r = onepassword_connect::resolver_with_env(
        &connect_source("op://Engineering/OpenAI/password"),
        env,
    )
    .unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(e.to_string().contains("1password_connect: GET"), "{e}");
    assert_no_leak(&e);
}

// ---------------------------------------------------------------------------------------------
// 1password (`op` CLI)

const OP_TOKEN: &str = "ops_test_token_abc";

const OP_SCRIPT: &str = r#"#!/bin/sh
if [ "$1" != "read" ] || [ "$2" != "--" ]; then echo "[ERROR] unexpected arguments: $*" >&2; exit 2; fi
if [ "$OP_SERVICE_ACCOUNT_TOKEN" != "ops_test_token_abc" ]; then
  echo "[ERROR] 2024/01/01 00:00:00 invalid service account token" >&2; exit 1
fi
case "$3" in
  "op://Engineering/OpenAI/credential") printf 'op-cli-secret-1\n' ;;
  "op://Engineering/Spaces/credential") printf '  spaced value \n\n' ;;
  "op://Engineering/Leaky/credential")
    printf 'leaky-secret-2\n'; echo "[ERROR] failed after printing leaky-secret-2" >&2; exit 1 ;;
  "op://Engineering/Long/credential")
    i=0; while [ $i -lt 100 ]; do printf 'xxxxxxxxxx' >&2; i=$((i+1)); done; exit 1 ;;
  *) echo "[ERROR] 2024/01/01 00:00:00 could not read secret '$3': isn't an item" >&2; exit 1 ;;
esac
"#;

/// Directories holding the stand-in `op` and an empty one, made once before any test spawns a
/// process: writing an executable while another thread forks can make exec fail with ETXTBSY.
fn op_dirs() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("iron-agent-op-test-{}", std::process::id()));
        let with_op = base.join("bin");
        let empty = base.join("empty");
        std::fs::create_dir_all(&with_op).unwrap();
        std::fs::create_dir_all(&empty).unwrap();
        let op = with_op.join("op");
        std::fs::write(&op, OP_SCRIPT).unwrap();
        std::fs::set_permissions(&op, std::fs::Permissions::from_mode(0o755)).unwrap();
        (with_op, empty)
    })
}

fn op_options(dir: &std::path::Path, token: Option<&str>) -> OpCliOptions {
    let env = match token {
        Some(t) => env_of(&[("OP_SERVICE_ACCOUNT_TOKEN", t)]),
        None => env_of(&[]),
    };
    let mut path = OsString::from(dir);
    path.push(":/usr/bin:/bin");
    OpCliOptions {
        env,
        path: Some(path),
    }
}

fn op_source(r: &str) -> OnePasswordSource {
    OnePasswordSource {
        secret_ref: r.into(),
        ..Default::default()
    }
}

async fn op_read(r: &str, opts: OpCliOptions) -> Result<String, SecretError> {
    onepassword::resolver_with(&op_source(r), opts)
        .unwrap()
        .fetch()
        .await
        .map(|v| v.expose().to_string())
}

#[tokio::test]
async fn op_cli_reads_known_reference() {
    let (bin, _) = op_dirs();
    let v = op_read(
        "op://Engineering/OpenAI/credential",
        op_options(bin, Some(OP_TOKEN)),
    )
    .await
    .unwrap();
    assert_eq!(v, "op-cli-secret-1");
    // Exactly one trailing newline is removed; the value's own whitespace stays.
    let v = op_read(
        "op://Engineering/Spaces/credential",
        op_options(bin, Some(OP_TOKEN)),
    )
    .await
    .unwrap();
    assert_eq!(v, "  spaced value \n");

    // A custom token_env.
    let cfg = OnePasswordSource {
        token_env: Some("MY_OP_TOKEN".into()),
        ..op_source("op://Engineering/OpenAI/credential")
    };
    let mut opts = op_options(bin, None);
    opts.env = env_of(&[("MY_OP_TOKEN", OP_TOKEN)]);
    let r = onepassword::resolver_with(&cfg, opts).unwrap();
    let s = Secret::with_resolver(&SecretSource::OnePassword(cfg), r, Default::default());
    s.refresh().await.unwrap();
    assert_eq!(s.current().unwrap().expose(), "op-cli-secret-1");
}

#[tokio::test]
async fn op_cli_failures_carry_stderr_but_no_secret() {
    let (bin, _) = op_dirs();
    let e = op_read(
        "op://Engineering/Nope/credential",
        op_options(bin, Some(OP_TOKEN)),
    )
    .await
    .unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("exit status 1") && s.contains("isn't an item"),
        "{s}"
    );
    assert!(
        s.starts_with("op://Engineering/Nope/credential: 1password:"),
        "{s}"
    );
    assert_no_leak(&e);

    // op printed the value and then failed: neither stdout nor its echo on stderr leaks.
    let e = op_read(
        "op://Engineering/Leaky/credential",
        op_options(bin, Some(OP_TOKEN)),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("[redacted]"), "{e}");
    assert_no_leak(&e);

    // Long stderr is capped.
    let e = op_read(
        "op://Engineering/Long/credential",
        op_options(bin, Some(OP_TOKEN)),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().len() < 400, "{e}");

    // Wrong token: op's message, not the token.
    let e = op_read(
        "op://Engineering/OpenAI/credential",
        op_options(bin, Some("bad-tok-5")),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("invalid service account token"),
        "{e}"
    );
    assert!(!e.to_string().contains("bad-tok-5"), "{e}");
    assert_no_leak(&e);

    // No token at all: refused before running op, naming the variable.
    let e = op_read("op://Engineering/OpenAI/credential", op_options(bin, None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("OP_SERVICE_ACCOUNT_TOKEN"), "{e}");
}

#[tokio::test]
async fn op_cli_not_installed() {
    let (_, empty) = op_dirs();
    // Only the empty directory, so an `op` installed on this machine cannot be found either.
    let mut opts = op_options(empty, Some(OP_TOKEN));
    opts.path = Some(empty.clone().into_os_string());
    let e = op_read("op://Engineering/OpenAI/credential", opts)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "1password: the `op` CLI is not installed (needed for source type 1password)"
        ),
        "{e}"
    );
    assert_no_leak(&e);
}
