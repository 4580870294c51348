#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use serde_json::json;

use super::*;
use crate::message::body;
use crate::secrets::cache::DRY_RUN_VALUE;

/// One route `r` to `upstream` with `credentials`; `hold`: every secret holds the dry-run value,
/// otherwise none was ever fetched (unavailable).
fn route(upstream: &str, credentials: serde_json::Value, hold: bool) -> Route {
    let cfg: McpGatewayConfig = serde_json::from_value(json!({"routes": [{
        "name": "r",
        "rules": [{"host": "mcp.test"}],
        "upstream": upstream,
        "credentials": credentials,
    }]}))
    .unwrap();
    let mut secrets = SecretRegistry::default();
    let gw = Gateway::build(Some(&cfg), &mut secrets).unwrap();
    if hold {
        secrets.hold_placeholders();
    }
    gw.routes.into_iter().next().unwrap()
}

fn request(uri: &str) -> ProxyRequest {
    http::Request::post(uri).body(body::empty()).unwrap()
}

fn query_pairs(req: &ProxyRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[test]
fn route_query_comes_first_then_the_requests_and_the_path_is_the_routes() {
    let r = route("https://up.test:8443/real/mcp?team=a&b=2", json!([]), true);
    let mut req = request("/client/path?x=1&team=z");
    let to = r.apply(&mut req).unwrap();
    assert_eq!(req.uri(), "/real/mcp?team=a&b=2&x=1&team=z");
    assert_eq!(to.authority, "up.test:8443");
    assert_eq!(to.scheme, Scheme::HTTPS);
    // No path in the upstream: `/`; no query anywhere: none.
    let r = route("http://up.test", json!([]), true);
    let mut req = request("/client");
    r.apply(&mut req).unwrap();
    assert_eq!(req.uri(), "/");
}

#[test]
fn credentials_go_to_headers_and_query_params_formatted() {
    let creds = json!([
        {"source": {"type": "env", "var": "IRON_GW_TEST_A"},
         "inject": {"header": "x-api-key", "formatter": "Key {{ .Value }}"}},
        {"source": {"type": "env", "var": "IRON_GW_TEST_B"},
         "inject": {"query_param": "k", "formatter": "{{ base64 \"u:\" .Value }}"}},
    ]);
    let r = route("https://up.test/mcp?team=a", creds, true);
    let mut req = request("/mcp?x=1&k=forged");
    let to = r.apply(&mut req).unwrap();
    assert_eq!(req.headers()["x-api-key"], format!("Key {DRY_RUN_VALUE}"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("u:{DRY_RUN_VALUE}"));
    // The injected parameter replaces the client's of the same name; the rest keep their order.
    let want: Vec<(String, String)> = [("team", "a"), ("x", "1"), ("k", b64.as_str())]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(query_pairs(&req), want);
    assert_eq!(
        to.audit.credentials_injected,
        ["IRON_GW_TEST_A:header:X-Api-Key", "IRON_GW_TEST_B:query:k"]
    );
    assert_eq!(to.audit.route, "r");
    assert_eq!(to.audit.upstream, "https://up.test/mcp?team=a");
}

#[test]
fn an_unavailable_credential_fails_when_required_and_is_skipped_otherwise() {
    let cred = |require: bool| {
        json!([{"source": {"type": "env", "var": "IRON_GW_TEST_C"},
                "inject": {"header": "authorization"}, "require": require}])
    };
    let r = route("https://up.test/mcp", cred(true), false);
    let err = r.apply(&mut request("/mcp")).err().unwrap();
    assert!(
        err.starts_with("gateway credential \"IRON_GW_TEST_C\" unavailable: "),
        "{err}"
    );
    let r = route("https://up.test/mcp", cred(false), false);
    let mut req = request("/mcp");
    let to = r.apply(&mut req).unwrap();
    assert!(req.headers().get("authorization").is_none());
    assert!(to.audit.credentials_injected.is_empty());
}

#[test]
fn a_value_that_is_no_header_value_fails_without_showing_it() {
    let creds = json!([{"source": {"type": "env", "var": "IRON_GW_TEST_D"},
        "inject": {"header": "authorization", "formatter": "Bearer {{ .Value }}\n"}}]);
    let r = route("https://up.test/mcp", creds, true);
    let err = r.apply(&mut request("/mcp")).err().unwrap();
    assert_eq!(
        err,
        "gateway credential \"IRON_GW_TEST_D\" is not a valid header value"
    );
    assert!(!err.contains(DRY_RUN_VALUE));
}
