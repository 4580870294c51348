use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::*;
use crate::audit::mcp::McpMessages;
use crate::config::mcp::{McpErrorConfig, McpMatcher, McpServer, McpTool};

fn mcp() -> Mcp {
    let cfg = McpConfig {
        error: McpErrorConfig::default(),
        servers: vec![McpServer {
            name: "gh".into(),
            rules: vec![serde_json::from_value(json!({"host": "mcp.test"})).unwrap()],
            tools: vec![
                McpTool {
                    name: "search".into(),
                    when: vec![],
                },
                McpTool {
                    name: "create_issue".into(),
                    when: vec![McpMatcher {
                        path: "owner".into(),
                        equals: Some(json!("ironsh")),
                        ..McpMatcher::default()
                    }],
                },
            ],
        }],
    };
    Mcp::build(Some(&cfg), None, &mut SecretRegistry::default())
        .unwrap()
        .unwrap()
}

fn judge(body: Value) -> (request::Judged, Arc<Server>) {
    let m = mcp();
    let s = m.servers[0].clone();
    let j = request::judge(&s, &m.error, body.to_string().as_bytes(), false);
    (j, s)
}

fn call(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

#[test]
fn calls_are_judged_by_tool_and_arguments() {
    let (j, _) = judge(call(json!(1), "search", json!({"q": "x"})));
    assert!(j.deny.is_none());
    assert_eq!(j.entries[0].tool.as_deref(), Some("search"));
    assert_eq!(j.entries[0].arguments, Some(json!({"q": "x"})));
    let (j, _) = judge(call(json!(7), "delete_repo", json!({})));
    assert_eq!(
        j.deny.unwrap(),
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32001,"message":"blocked by iron-proxy policy"}}"#
    );
    assert_eq!(j.entries[0].reason, Some("tool_not_allowed"));
    let (j, _) = judge(call(json!("a"), "create_issue", json!({"owner": "evil"})));
    assert_eq!(j.entries[0].reason, Some("argument_constraint"));
    let (j, _) = judge(call(json!("a"), "create_issue", json!({"owner": "ironsh"})));
    assert!(j.deny.is_none());
}

#[test]
fn a_batch_is_denied_whole_and_malformed_bodies_get_null_ids() {
    let (j, _) = judge(json!([
        call(json!(1), "search", json!({})),
        call(json!(2), "nope", json!({})),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]));
    let v: Value = serde_json::from_slice(&j.deny.unwrap()).unwrap();
    let ids: Vec<Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(1), json!(2), Value::Null]);
    assert_eq!(j.entries[0].reason, Some("batch_denied"));
    assert_eq!(j.entries[1].reason, Some("tool_not_allowed"));
    let m = mcp();
    let s = m.servers[0].clone();
    let j = request::judge(&s, &m.error, b"[not json", false);
    let v: Value = serde_json::from_slice(&j.deny.unwrap()).unwrap();
    assert_eq!(v[0]["id"], Value::Null);
    assert_eq!(j.entries[0].reason, Some("malformed_jsonrpc"));
    // A readable message without a tool name: denied with its own id (§14.2), not null.
    let j = request::judge(&s, &m.error, b"{\"method\":\"tools/call\",\"id\":3}", false);
    assert_eq!(j.entries[0].reason, Some("malformed_jsonrpc"));
    let v: Value = serde_json::from_slice(&j.deny.unwrap()).unwrap();
    assert_eq!(v["id"], json!(3));
    let (j, _) = judge(
        json!({"jsonrpc": "2.0", "id": "c-9", "method": "tools/call",
        "params": {"arguments": {}}}),
    );
    assert_eq!(j.entries[0].reason, Some("malformed_jsonrpc"));
    assert_eq!(
        j.deny.unwrap(),
        r#"{"jsonrpc":"2.0","id":"c-9","error":{"code":-32001,"message":"blocked by iron-proxy policy"}}"#
    );
}

#[test]
fn long_arguments_are_cut_and_redaction_drops_them() {
    let long = "x".repeat(100);
    let (j, _) = judge(call(json!(1), "search", json!({"q": long})));
    let raw = j.entries[0].raw_arguments.clone().unwrap();
    assert_eq!(raw.len(), 64);
    assert!(raw.ends_with("..."));
    let m = mcp();
    let s = m.servers[0].clone();
    let body = call(json!(1), "search", json!({"q": "secret"})).to_string();
    let j = request::judge(&s, &m.error, body.as_bytes(), true);
    assert!(j.entries[0].arguments_redacted && j.entries[0].arguments.is_none());
}

fn sse_response(chunks: Vec<&'static str>) -> ProxyResponse {
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, BoxErr>(http_body::Frame::data(bytes::Bytes::from(c)))),
    );
    let mut r = http::Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    r
}
type BoxErr = crate::message::body::BoxError;

#[tokio::test]
async fn sse_events_are_filtered_one_by_one_and_others_kept_byte_for_byte() {
    let m = mcp();
    let msgs = McpMessages::default();
    let f = ResponseFilter::new(m.servers[0].clone(), vec![json!(2)], msgs.clone());
    let list = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"search"},{"name":"rm"},{"name":"create_issue"}]}}"#;
    let resp = sse_response(vec![
        ": keepalive\r\n\r\nevent: message\nid: 9\nda",
        "ta: ",
        Box::leak(format!("{list}\n\n").into_boxed_str()),
        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ntail",
    ]);
    let out = f.apply(resp, None).await.unwrap();
    let body = out.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    assert_eq!(
        text,
        ": keepalive\r\n\r\nevent: message\nid: 9\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"create_issue\"}]}}\n\n\
         data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ntail"
    );
    let entries = msgs.snapshot();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].decision, "filtered");
    assert_eq!(entries[0].filtered, Some(1));
    assert_eq!(entries[1].method.as_deref(), Some("notifications/progress"));
}
