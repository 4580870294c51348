//! `mcp_gateway` credentials end to end: a required credential that cannot be read fails the
//! request (502, audited `error`, nothing dialled); a `query_param` credential shaped by a
//! `base64` formatter reaches the upstream, after the route's query and the request's.

use base64::Engine;
use serde_json::json;

use super::{McpServer, call, mcp_audit, post, start_agent};

/// A route for `/gw` to `upstream`'s `/gw/real?team=a` with `credentials`.
fn gateway(upstream: &McpServer, credentials: serde_json::Value) -> serde_json::Value {
    json!({"routes": [{
        "name": "real",
        "rules": [{"host": "localhost", "paths": ["/gw"]}],
        "upstream": format!("http://127.0.0.1:{}/gw/real?team=a", upstream.port),
        "credentials": credentials,
    }]})
}

#[test]
fn a_required_credential_that_is_unavailable_fails_with_502_and_an_error_record() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let upstream = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        // `require` defaults to true; GW_ABSENT is not in the agent's environment.
        let creds = json!([{"source": {"type": "env", "var": "GW_ABSENT"},
            "inject": {"header": "authorization"}}]);
        let agent = start_agent(dir.path(), Some(gateway(&upstream, creds)), &[]);
        let r = iron_agent_tests::http_request(
            agent.addr("http"),
            post(srv.port, "/gw", &call(json!(1), "search", json!({}))),
        )
        .await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(upstream.seen.all().is_empty(), "nothing is sent without it");
        assert!(srv.seen.all().is_empty());
        let a = mcp_audit(&agent, 1);
        assert_eq!(a["action"], "error", "{a}");
        assert_eq!(a["status_code"], 502, "{a}");
        let err = a["error"].as_str().unwrap();
        assert!(
            err.starts_with("gateway credential \"GW_ABSENT\" unavailable: "),
            "{a}"
        );
        // The policy still ran first (the call was allowed), and is audited.
        assert_eq!(a["mcp"]["messages"][0]["decision"], "allow", "{a}");
    });
}

#[test]
fn a_query_param_credential_is_base64_formatted_after_the_route_and_request_queries() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let upstream = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        // Characters that must be escaped in a query, before and after base64.
        let secret = "s3cr&t=+/value?";
        let creds = json!([{"source": {"type": "env", "var": "GW_QUERY_KEY"},
            "inject": {"query_param": "key", "formatter": "{{ base64 \"bot:\" .Value }}"}}]);
        let agent = start_agent(
            dir.path(),
            Some(gateway(&upstream, creds)),
            &[("GW_QUERY_KEY", secret)],
        );
        let mut req = post(srv.port, "/gw", &call(json!(1), "search", json!({})));
        *req.uri_mut() = "/gw?x=1&key=forged".parse().unwrap();
        let r = iron_agent_tests::http_request(agent.addr("http"), req).await;
        assert_eq!(r.status, 200, "{}", r.text());

        let seen = upstream.seen.all();
        assert_eq!(seen.len(), 1);
        let (path, query) = seen[0].0.split_once('?').unwrap();
        assert_eq!(path, "/gw/real");
        let got: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("bot:{secret}"));
        // Route query, then the request's (its own `key` replaced), then the credential.
        let want: Vec<(String, String)> = [("team", "a"), ("x", "1"), ("key", b64.as_str())]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "{}", seen[0].0);
        assert!(!seen[0].0.contains("forged"));
        let a = mcp_audit(&agent, 1);
        assert_eq!(
            a["mcp"]["gateway"]["credentials_injected"],
            json!(["GW_QUERY_KEY:query:key"])
        );
        agent.assert_not_logged(secret);
        agent.assert_not_logged(&b64);
    });
}
