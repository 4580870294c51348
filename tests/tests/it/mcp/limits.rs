//! What MCP interception does not read and what it cannot: a body over
//! `proxy.max_request_body_bytes` is denied `oversize_body` (never forwarded cut), a
//! `tools/call` sent as `text/plain` passes unpoliced (only `application/json` is read), and a
//! `tools/list` JSON answer over `proxy.max_response_body_bytes` is a 413, never passed
//! unfiltered.

use iron_agent_tests::http_request;
use serde_json::{Value, json};

use super::{McpServer, call, mcp_audit, post, start_agent_with};

#[test]
fn oversize_bodies_are_denied_and_text_plain_is_not_policed() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let agent = start_agent_with(dir.path(), None, &[], |c| {
            c.proxy.max_request_body_bytes = Some(128)
        });
        let (http, p) = (agent.addr("http"), srv.port);

        // Under the limit: judged and allowed.
        let r = http_request(http, post(p, "/mcp", &call(json!(1), "search", json!({})))).await;
        assert!(r.text().contains("done"), "{}", r.text());

        // Over it, even for an allowed tool: the error envelope with id null, nothing sent.
        let big = call(json!(2), "search", json!({"q": "x".repeat(300)}));
        let r = http_request(http, post(p, "/mcp", &big)).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32042,"message":"nope"}}"#
        );
        let a = mcp_audit(&agent, 2);
        assert_eq!(a["action"], "reject", "{a}");
        assert_eq!(
            a["mcp"]["messages"][0],
            json!({"direction": "request", "decision": "deny", "reason": "oversize_body"})
        );
        assert_eq!(
            srv.seen.bodies().len(),
            1,
            "the oversize body never went upstream"
        );

        // A denied tool as text/plain: not read, so forwarded as is (as iron-proxy does).
        let denied = call(json!(3), "delete_repo", json!({}));
        let mut req = post(p, "/mcp", &denied);
        req.headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        let r = http_request(http, req).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("done"), "{}", r.text());
        let bodies = srv.seen.bodies();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[1], denied.to_string(), "forwarded byte for byte");
        let a = mcp_audit(&agent, 3);
        assert_eq!(a["action"], "allow", "{a}");
        let msgs = a["mcp"]["messages"].as_array();
        assert!(
            msgs.is_none_or(|m| m.iter().all(|e| e["direction"] != "request")),
            "no request entry for a body that was not read: {a}"
        );
    });
}

#[test]
fn a_tools_list_json_answer_over_the_response_limit_is_413() {
    iron_agent_tests::runtime().block_on(async {
        let srv = McpServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        // The fake's tools/list answer is about 130 bytes.
        let agent = start_agent_with(dir.path(), None, &[], |c| {
            c.proxy.max_response_body_bytes = Some(100)
        });
        let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
        let r = http_request(agent.addr("http"), post(srv.port, "/mcp", &list)).await;
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(!r.text().contains("delete_repo"), "{}", r.text());
        assert_eq!(
            srv.seen.bodies().len(),
            1,
            "the request itself went through"
        );
        let a = mcp_audit(&agent, 1);
        assert_eq!(a["status_code"], 413, "{a}");

        // The same limit does not touch answers that are not filtered (they stream through):
        // this one echoes 200 bytes of arguments.
        let pad = "y".repeat(200);
        let r = http_request(
            agent.addr("http"),
            post(
                srv.port,
                "/mcp",
                &call(json!(6), "search", json!({"pad": pad})),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["result"]["arguments"]["pad"], pad.as_str());
    });
}
