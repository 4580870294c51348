//! Issue 15 item 6, as root: `judge`, `grpc`, `source_ip` and `secrets` with
//! `allow_connect_without_header` inside `intercept.policies[i].transforms`, plus MCP
//! interception and the MCP gateway, for a governed user whose policy (`restricted`) holds
//! them, through the eBPF redirect and through the tunnel listener (CONNECT and SOCKS5,
//! HTTP/1.1 and HTTP/2). The top-level pipeline (`iatest1`) runs none of the policy's
//! transforms. Same world as `ebpf_e2e.rs` (see `iron_agent_tests::ebpf_world`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iron_agent_tests::TestCa;
use iron_agent_tests::ebpf_world::{World, curl, curl_env, echoed_header};
use iron_agent_tests::grpc_transform::{Call, ServerTls, TransformServer};
use iron_agent_tests::netns::TestUser;
use serde_json::{Value, json};

use crate::judge::llm::{self, FakeLlm, KEY};
use crate::mcp::{McpServer, call, mcp_block};

const WHY: &str = "eBPF programs, test users, a network namespace";
const REAL: &str = "policy-real-key-5521";

/// A Streamable HTTP MCP server for `ws.test` on 10.231.0.5:443 inside the namespace.
fn mcp_origin(world: &World) -> McpServer {
    let acceptor = world.origin_ca.acceptor(&["ws.test"], &[]);
    world.ns.serve_in(move || async move {
        McpServer::start_on("10.231.0.5:443".parse().unwrap(), Some(acceptor)).await
    })
}

/// The `restricted` policy's pipeline: everything issue 15 adds, scoped to its hosts.
fn policy_transforms(llm: &FakeLlm, svc: &TransformServer) -> Value {
    json!([
        {"name": "allowlist", "config": {"rules": [
            {"host": "other.test", "paths": ["/mine/*"]},
            {"host": "other.test", "source_ip": "10.9.0.0/16"},
            {"host": "h2.test"},
            {"host": "ws.test"},
        ]}},
        {"name": "secrets", "config": {"secrets": [{
            "source": {"type": "env", "var": "POLICY_KEY"},
            "replace": {"proxy_value": "proxy-key-2", "match_headers": ["X-Api-Key"],
                "require": true, "allow_connect_without_header": true},
            "rules": [{"host": "other.test"}],
        }]}},
        {"name": "judge", "config": {
            "name": "guard",
            "prompt": "Deny billing writes.",
            "rules": [{"host": "h2.test", "methods": ["POST"]}],
            "provider": {"type": "anthropic", "model": "m", "api_key_env": "JUDGE_KEY",
                "base_url": llm.base_url()},
        }},
        {"name": "grpc", "config": {"name": "policy", "target": svc.target(),
            "send_request_body": true, "send_response_body": true,
            "rules": [{"host": "h2.test"}]}},
    ])
}

/// curl as `user` POSTing `body` (JSON) to `url`: (status, body).
fn post(
    user: &TestUser,
    ca: &std::path::Path,
    env: &[(&str, &str)],
    url: &str,
    body: &str,
) -> (String, String) {
    let extra = [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        body,
    ];
    let (_, code, out) = curl_env(user, env, ca, &extra, url);
    (code, out)
}

#[test]
fn policy_pipelines_run_the_issue_15_transforms() {
    let Some(world) = World::enter(WHY) else {
        return;
    };
    let mcp = mcp_origin(&world);
    let llm = world.rt.block_on(FakeLlm::start());
    let svc = world.rt.block_on(TransformServer::start(ServerTls::Plain));
    let u1 = TestUser::ensure("iatest1");
    let u2 = TestUser::ensure("iatest2");
    let mitm = TestCa::new("e2e MITM CA");
    let mut cfg = world.config(&mitm).tunnel_listener();
    cfg.intercept.as_mut().unwrap()["policies"][0]["transforms"] = policy_transforms(&llm, &svc);
    let mut block = mcp_block();
    block["servers"][0]["rules"] = json!([{"host": "ws.test", "paths": ["/mcp", "/gw"]}]);
    cfg.mcp = Some(block);
    cfg.mcp_gateway = Some(json!({"routes": [{
        "name": "real",
        "rules": [{"host": "ws.test", "paths": ["/gw"]}],
        "upstream": "https://ws.test/gw/real",
    }]}));
    let agent = world
        .agent(&cfg)
        .env("POLICY_KEY", REAL)
        .env("JUDGE_KEY", KEY)
        .start_attached();
    let ca = world.mitm_ca();
    let connect = format!("http://{}", agent.addr("tunnel"));
    let socks = format!("socks5h://{}", agent.addr("tunnel"));
    let via: [(&str, Vec<(&str, &str)>); 3] = [
        ("redirect", vec![]),
        ("connect", vec![("HTTPS_PROXY", connect.as_str())]),
        ("socks5", vec![("ALL_PROXY", socks.as_str())]),
    ];

    // judge + grpc (HTTP/2 to h2.test), by the redirect and both tunnels.
    for (place, env) in &via {
        let url = |p: &str| format!("https://h2.test/{p}/{place}");
        let h2 = ["--http2"];
        let run = |p: &str| {
            let mut extra = vec!["-X", "POST", "-d", "{}"];
            extra.extend_from_slice(&h2);
            curl_env(&u2, env, &ca, &extra, &url(p))
        };
        let (rc, code, out) = run("ok");
        assert_eq!(
            (rc, code.as_str()),
            (0, "200"),
            "{place}: {out}\n{}",
            agent.logs()
        );
        assert!(out.contains(r#""version":"HTTP/2.0""#), "{place}: {out}");
        assert_eq!(run("deny").1, "403", "{place}");
        let (_, code, out) = run("reject");
        assert_eq!(code, "451", "{place}: {out}");
        assert!(out.contains("blocked by policy"), "{place}: {out}");
        let (_, code, out) = run("modify-response");
        assert_eq!(code, "202", "{place}: {out}");
        assert!(out.contains("replaced by the policy"), "{place}: {out}");
        let rec = agent.audit_where(|a| a["path"] == format!("/deny/{place}"));
        assert_eq!(rec["policy"], "restricted", "{rec}");
        assert_eq!(rec["rejected_by"], "guard", "{rec}");
        assert_eq!(rec["protocol"], "h2", "{rec}");
        assert_eq!(rec["uid"], u2.uid);
        let rec = agent.audit_where(|a| a["path"] == format!("/reject/{place}"));
        assert_eq!(rec["rejected_by"], "policy", "{rec}");
        if *place != "redirect" {
            assert_eq!(rec["tunnel"]["protocol"], *place, "{rec}");
        }
    }
    let judged: Vec<Value> = llm
        .calls()
        .iter()
        .map(|c| llm::envelope(c)["url"].clone())
        .collect();
    assert_eq!(judged.len(), 12, "{judged:?}");
    let asked = svc
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Request(_)))
        .count();
    assert_eq!(asked, 9, "grpc asked for every request the judge allowed");
    // The top-level pipeline has neither: iatest1's POST is neither judged nor sent to grpc.
    let (rc, code, out) = curl(
        &u1,
        &ca,
        &["-X", "POST", "-d", "{}"],
        "https://h2.test/deny/top",
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "{out}");
    assert_eq!(llm.count(), 12);
    assert_eq!(
        svc.calls()
            .iter()
            .filter(|c| matches!(c, Call::Request(_)))
            .count(),
        9
    );

    // source_ip and the required placeholder on other.test; every tunnel opens without it.
    for (place, env) in &via {
        let key = ["-H", "x-api-key: proxy-key-2"];
        let (rc, code, out) = curl_env(
            &u2,
            env,
            &ca,
            &key,
            &format!("https://other.test/mine/{place}"),
        );
        assert_eq!(
            (rc, code.as_str()),
            (0, "200"),
            "{place}: {out}\n{}",
            agent.logs()
        );
        assert_eq!(
            echoed_header(&out, "x-api-key").as_deref(),
            Some(REAL),
            "{place}"
        );
        let (_, code, _) = curl_env(
            &u2,
            env,
            &ca,
            &key,
            &format!("https://other.test/theirs-{place}"),
        );
        assert_eq!(
            code, "403",
            "{place}: only another client's rule admits this path"
        );
        let (_, code, _) = curl_env(
            &u2,
            env,
            &ca,
            &[],
            &format!("https://other.test/mine/bare-{place}"),
        );
        assert_eq!(code, "403", "{place}: require");
        let rec = agent.audit_where(|a| a["path"] == format!("/theirs-{place}"));
        assert_eq!(rec["rejected_by"], "allowlist", "{rec}");
        let rec = agent.audit_where(|a| a["path"] == format!("/mine/bare-{place}"));
        assert_eq!(rec["rejected_by"], "secrets", "{rec}");
    }
    let setups = agent.audits_where(6, |a| {
        a["method"] == "CONNECT" && a["host"] == "other.test:443"
    });
    assert!(
        setups
            .iter()
            .all(|a| a["action"] == "allow" && a["policy"] == "restricted"),
        "{setups:?}"
    );

    // MCP: the denial envelope, tools/list filtered, the gateway route; by redirect and tunnel.
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}).to_string();
    for (place, env) in &via[..2] {
        let denied = call(json!(place), "delete_repo", json!({})).to_string();
        let (code, out) = post(&u2, &ca, env, "https://ws.test/mcp", &denied);
        assert_eq!(code, "200", "{place}: {out}");
        assert!(
            out.contains(r#""error":{"code":-32042,"message":"nope"}"#),
            "{place}: {out}"
        );
        let (_, out) = post(&u2, &ca, env, "https://ws.test/mcp", &list);
        assert!(
            out.contains("create_issue") && !out.contains("delete_repo"),
            "{place}: {out}"
        );
        let allowed = call(json!(1), "search", json!({})).to_string();
        let (code, out) = post(&u2, &ca, env, "https://ws.test/gw", &allowed);
        assert_eq!(code, "200", "{place}: {out}");
        assert!(out.contains("/gw/real"), "routed: {place}: {out}");
    }
    let bodies = mcp.seen.bodies();
    assert!(
        !bodies.iter().any(|b| b.contains("delete_repo")),
        "{bodies:?}"
    );
    let rec =
        agent.audit_where(|a| a["mcp"]["gateway"]["route"] == "real" && a.get("tunnel").is_some());
    assert_eq!(rec["policy"], "restricted", "{rec}");
    assert_eq!(rec["uid"], u2.uid);
    let rec = agent.audit_where(|a| {
        a["mcp"]["messages"][0]["reason"] == "tool_not_allowed" && a.get("tunnel").is_none()
    });
    assert_eq!(rec["policy"], "restricted", "{rec}");
    agent.assert_not_logged(REAL);
    agent.assert_not_logged(KEY);
}
