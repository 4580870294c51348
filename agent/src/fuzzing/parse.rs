//! Targets fed whole: config text, DNS packets, templates, SigV4 scopes, JSON-RPC bodies.

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::Value;

use super::block_on;
use crate::audit::mcp::McpMessages;
use crate::mcp::Mcp;
use crate::mcp::filter::ResponseFilter;
use crate::mcp::request::ErrorTemplate;
use crate::message::body;
use crate::resolve::Resolver;
use crate::secrets::SecretRegistry;
use crate::template::Template;

/// Static records with a CNAME chain, a loop and an A record, so the handler's chain walking
/// and interception both run.
pub(super) const DNS_CONFIG: &str = r#"
dns:
  proxy_ip: "10.1.2.3"
  records:
    - {name: "static.test", type: A, value: "10.0.0.5"}
    - {name: "alias.test", type: CNAME, value: "static.test"}
    - {name: "chain.test", type: CNAME, value: "alias.test"}
    - {name: "loop-a.test", type: CNAME, value: "loop-b.test"}
    - {name: "loop-b.test", type: CNAME, value: "loop-a.test"}
"#;

/// One MCP server with allowed tools and each kind of `when` clause.
pub(super) const MCP_CONFIG: &str = r#"
mcp:
  servers:
    - name: fuzz
      rules:
        - host: "mcp.test"
      tools:
        - name: "search"
        - name: "create_issue"
          when:
            - {path: "owner", equals: "ironsh"}
            - {path: "repo", in: ["a", "b"]}
            - {path: "title", matches: "^\\[bot\\]"}
            - {path: "labels.0", equals: "x"}
"#;

/// Fields a template may name in the fuzz target (the union of what transforms allow).
const TEMPLATE_FIELDS: &[&str] = &["Value", "Body", "Method", "Path", "Header.*", "Env.*"];

/// The YAML config loader: parse, `IRON_*` overrides (none) and validation; errors rendered.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::config::load_str(text, &|_| None) {
        Ok(cfg) => {
            let _ = cfg.proxy.effective_deny_cidrs();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The Go-template subset: parse against the allowed fields, then render with every field set.
pub fn template(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let Ok(t) = Template::parse(&src, TEMPLATE_FIELDS) else {
        return;
    };
    let _ = t.field_refs();
    let lookup = |path: &[String]| -> Option<Cow<'static, [u8]>> {
        match path.first().map(String::as_str) {
            Some("Body") => Some(Cow::Borrowed(b"{\"a\":[1,2]}\xff")),
            Some("Env") => None,
            _ => Some(Cow::Owned(path.join(".").into_bytes())),
        }
    };
    let _ = t.render_bytes(&lookup);
}

/// The SigV4 scope of an inbound request: the `Authorization` value up to the first newline,
/// then the query string.
pub fn sigv4_scope(data: &[u8]) {
    let (auth, query) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(auth) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let query = String::from_utf8_lossy(query);
    let scope = crate::transform::aws_auth::scope::parse(&headers, Some(&query));
    let _ = scope.map_err(|e| e.to_string());
    let _ = crate::transform::aws_auth::scope::strip_presign_params(&query);
}

/// JSON-RPC/MCP bodies: the seed's low two bits pick a request body (judged against the
/// server's tools), a JSON response or an SSE response (both through the `tools/list` filter).
pub fn mcp_jsonrpc(data: &[u8]) {
    static MCP: OnceLock<Option<Mcp>> = OnceLock::new();
    let mcp = MCP.get_or_init(|| {
        let cfg = crate::config::parse(MCP_CONFIG).ok()?;
        Mcp::build(cfg.mcp.as_ref(), None, &mut SecretRegistry::default())
            .ok()
            .flatten()
    });
    let (Some(mcp), Some((&seed, body))) = (mcp, data.split_first()) else {
        return;
    };
    let Some(server) = mcp.servers().first() else {
        return;
    };
    let media = match seed & 3 {
        0 | 3 => {
            let tpl = ErrorTemplate {
                code: -32001,
                message: "blocked".into(),
            };
            let judged = crate::mcp::request::judge(server, &tpl, body, seed & 4 != 0);
            let _ = judged.deny.map(|d| d.len());
            return;
        }
        1 => "application/json",
        _ => "text/event-stream",
    };
    let ids = vec![Value::from(1), Value::from("a")];
    let filter = ResponseFilter::new(server.clone(), ids, McpMessages::default());
    let mut resp = http::Response::new(body::full(body.to_vec()));
    if let Ok(v) = http::HeaderValue::from_str(media) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    block_on(async move {
        if let Ok(resp) = filter.apply(resp, Some(1 << 20)).await {
            let _ = resp.into_body().collect().await;
        }
    });
}

/// A DNS request in, the encoded answer out.
type DnsAnswer = Box<dyn Fn(Request) -> Vec<u8> + Send + Sync>;

/// The DNS request handler, on a packet as the UDP listener receives it; the answer is encoded
/// and decoded again.
pub fn dns_request(data: &[u8]) {
    static HANDLER: OnceLock<Option<DnsAnswer>> = OnceLock::new();
    let handler = HANDLER.get_or_init(|| {
        let cfg = crate::config::parse(DNS_CONFIG).ok()?;
        // Never dialled: interception mode without passthrough names resolves nothing.
        let resolver = Resolver::new(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)))).ok()?;
        let h = crate::dns::handler_for_fuzzing(&cfg.dns, Arc::new(resolver))?;
        Some(Box::new(move |req: Request| {
            let sink = Sink::default();
            block_on(h.handle_request::<_, TokioTime>(&req, sink.clone()));
            std::mem::take(&mut *sink.0.lock())
        }))
    });
    let Some(handler) = handler else {
        return;
    };
    let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
    let Ok(req) = Request::from_bytes(data.to_vec(), src, Protocol::Udp) else {
        return;
    };
    let answer = handler(req);
    let _ = hickory_server::proto::op::Message::from_vec(&answer);
}

/// Keeps the encoded response.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Sink {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut out = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut out);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock() = out;
        Ok(info)
    }
}
