//! The `judge` transform end to end: the real agent, a fake LLM API on loopback that speaks
//! Anthropic Messages and OpenAI Chat Completions and records every call (`judge/llm.rs`), and
//! an HTTPS echo origin. Covers allow, deny, rules scoping (no match → no call), the exact
//! request each provider gets, the envelope, fallback deny/skip on errors, malformed answers
//! and timeouts, the circuit breaker (open, half-open probe failing and succeeding), the audit
//! annotations, HTTP/2 and tunnels, config errors and the documented example.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod limits;
pub(crate) mod llm;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::mitm::{MitmAgent, Setup};
use iron_agent_tests::{AgentConfig, TestCa, Transform, h2_handshake, tls_connect};
use llm::{FakeLlm, KEY};
use serde_json::{Value, json};

const POLICY: &str = "Allow comments on the \"reviewed\" repository.\nDeny billing writes.";

/// A judge instance for POSTs to localhost, against `llm`.
fn judge(name: &str, provider: &str, llm: &FakeLlm, extra: Value) -> Transform {
    let mut cfg = json!({
        "name": name,
        "prompt": POLICY,
        "rules": [{"host": "localhost", "methods": ["POST"]}],
        "provider": {
            "type": provider,
            "model": format!("{provider}-test-model"),
            "api_key_env": "JUDGE_KEY",
            "base_url": llm.base_url(),
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Transform::new("judge", cfg)
}

async fn setup(transforms: Vec<Transform>) -> Setup {
    Setup::localhost(transforms, &[("JUDGE_KEY", KEY)], &[]).await
}

fn post(host: &str, path: &str, body: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer proxy-token-placeholder")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The judge's trace (by instance name) in the audit record for `path`.
fn trace(s: &Setup, path: &str, name: &str) -> (Value, Value) {
    let rec = s.agent.audit_where(|a| a["path"] == path);
    let t = rec["request_transforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no {name} trace: {rec}"))
        .clone();
    (rec, t)
}

fn ann<'a>(t: &'a Value, key: &str) -> &'a Value {
    &t["annotations"][key]
}

#[test]
fn anthropic_allow_deny_and_the_exact_request() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            judge("github-write-guard", "anthropic", &llm, json!({})),
        ])
        .await;
        let host = s.host();

        let r = s
            .send(post(
                &host,
                "/repos/reviewed/comments?draft=1",
                r#"{"body":"LGTM"}"#,
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.echo()["body"],
            r#"{"body":"LGTM"}"#,
            "body forwarded intact"
        );
        let r = s.send(post(&host, "/deny/billing", "{}")).await;
        assert_eq!(r.status, 403);
        assert_eq!(llm.count(), 2);

        // The exact call: endpoint, headers, body shape, system prompt, envelope.
        let call = &llm.calls()[0];
        assert_eq!(
            (call.method.as_str(), call.path()),
            ("POST", "/v1/messages")
        );
        assert_eq!(call.header("x-api-key"), Some(KEY));
        assert_eq!(call.header("anthropic-version"), Some("2023-06-01"));
        let body = llm::body(call);
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["max_tokens", "messages", "model", "system"]);
        assert_eq!(body["model"], "anthropic-test-model");
        assert_eq!(body["max_tokens"], 256);
        let system = body["system"].as_str().unwrap();
        assert!(system.starts_with("You are a security policy judge for an egress proxy."));
        assert!(
            system.ends_with(&format!("{}\n", serde_json::to_string(POLICY).unwrap())),
            "policy embedded as a JSON string: {system}"
        );
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        let env = llm::envelope(call);
        assert_eq!(env["method"], "POST");
        assert_eq!(env["url"], "/repos/reviewed/comments?draft=1");
        assert_eq!(env["host"], host);
        assert_eq!(env["body"], r#"{"body":"LGTM"}"#);
        let names: Vec<&str> = env["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names[..4],
            ["Host", "Content-Type", "Content-Length", "Authorization"]
        );
        assert_eq!(env["headers"][3]["value"], "Bearer proxy-token-placeholder");
        assert!(env.get("warnings").is_none(), "{env}");

        // Audit: the instance name labels the trace and rejected_by; judge.* annotations.
        let (rec, t) = trace(&s, "/repos/reviewed/comments", "github-write-guard");
        assert_eq!(rec["action"], "allow");
        assert_eq!(t["action"], "allow");
        assert_eq!(ann(&t, "judge.instance"), "github-write-guard");
        assert_eq!(ann(&t, "judge.model"), "anthropic-test-model");
        assert_eq!(ann(&t, "judge.decision"), "ALLOW");
        assert_eq!(
            ann(&t, "judge.reason"),
            "comment on the reviewed repository"
        );
        assert_eq!(ann(&t, "judge.input_tokens"), 321);
        assert_eq!(ann(&t, "judge.output_tokens"), 17);
        assert!(ann(&t, "judge.duration_ms").as_f64().unwrap() > 0.0);
        assert!(t["annotations"].get("judge.fallback_applied").is_none());
        let (rec, t) = trace(&s, "/deny/billing", "github-write-guard");
        assert_eq!(rec["action"], "reject");
        assert_eq!(rec["status_code"], 403);
        assert_eq!(rec["rejected_by"], "github-write-guard");
        assert_eq!(ann(&t, "judge.decision"), "DENY");
        assert_eq!(ann(&t, "judge.reason"), "writes to billing are not allowed");
        s.assert_not_in_logs(&[KEY]);
    });
}

#[test]
fn rules_scope_the_judge_and_the_allowlist_still_wins() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            judge("guard", "anthropic", &llm, json!({})),
        ])
        .await;
        // GET is outside the judge's rules: no call, no annotations.
        let r = s.get("/repos/reviewed").await;
        assert_eq!(r.status, 200);
        let (_, t) = trace(&s, "/repos/reviewed", "guard");
        assert_eq!(t["action"], "allow");
        assert!(t.get("annotations").is_none(), "{t}");
        // A host the allowlist denies never reaches the judge, whatever it would say.
        let r = iron_agent_tests::https_request(
            s.agent.addr("https"),
            "example.com",
            s.mitm.client_config(),
            post("example.com", "/repos/reviewed", "{}"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 403);
        let rec = s.agent.audit_where(|a| a["host"] == "example.com");
        assert_eq!(rec["rejected_by"], "allowlist");
        assert_eq!(llm.count(), 0, "no LLM call for requests outside the rules");
    });
}

#[test]
fn openai_fenced_answers_and_a_key_from_a_file_source() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        let mut t = judge("slack-guard", "openai", &llm, json!({}));
        let p = &mut t.config["provider"];
        p.as_object_mut().unwrap().remove("api_key_env");
        p["api_key"] = json!({"type": "file", "path": "{dir}/openai.key"});
        p["max_tokens"] = json!(64);
        let s = Setup::localhost(
            vec![Transform::allowlist(&["localhost"]), t],
            &[],
            &[("openai.key", KEY)],
        )
        .await;
        let host = s.host();
        assert_eq!(
            s.send(post(&host, "/api/chat.postMessage", "{}"))
                .await
                .status,
            200
        );
        assert_eq!(s.send(post(&host, "/deny/dm", "{}")).await.status, 403);
        // Prose instead of JSON: the default fallback (deny), raw output kept for debugging.
        assert_eq!(s.send(post(&host, "/garbage", "{}")).await.status, 403);

        let call = &llm.calls()[0];
        assert_eq!(call.path(), "/v1/chat/completions");
        assert_eq!(
            call.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        let body = llm::body(call);
        assert_eq!(body["model"], "openai-test-model");
        assert_eq!(body["max_completion_tokens"], 64);
        assert!(body.get("max_tokens").is_none());
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["role"], "system");
        assert!(
            msgs[0]["content"]
                .as_str()
                .unwrap()
                .contains("Operator policy")
        );
        assert_eq!(llm::envelope(call)["url"], "/api/chat.postMessage");

        let (_, t) = trace(&s, "/api/chat.postMessage", "slack-guard");
        assert_eq!(ann(&t, "judge.decision"), "ALLOW");
        assert_eq!(ann(&t, "judge.input_tokens"), 400);
        assert_eq!(ann(&t, "judge.output_tokens"), 20);
        let (rec, t) = trace(&s, "/garbage", "slack-guard");
        assert_eq!(rec["rejected_by"], "slack-guard");
        assert_eq!(ann(&t, "judge.decision"), "FALLBACK_DENY");
        assert_eq!(ann(&t, "judge.fallback_applied"), "deny");
        assert!(
            ann(&t, "judge.reason")
                .as_str()
                .unwrap()
                .starts_with("parsing decision:")
        );
        assert_eq!(
            ann(&t, "judge.raw_output"),
            "```json\nLooks fine to me, go ahead!\n```"
        );
        s.assert_not_in_logs(&[KEY]);
    });
}

#[test]
fn fallback_deny_and_skip_on_errors_and_timeouts() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        let slow = FakeLlm::with_delay(Duration::from_secs(3)).await;
        let scoped = |name: &str, l: &FakeLlm, path: &str, extra: Value| {
            let mut t = judge(name, "anthropic", l, extra);
            t.config["rules"] = json!([{"host": "localhost", "paths": [path]}]);
            t
        };
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            scoped("hard", &llm, "/fail/hard", json!({})),
            scoped("advisory", &llm, "/fail/soft", json!({"fallback": "skip"})),
            scoped("slow", &slow, "/slow", json!({"timeout": "300ms"})),
        ])
        .await;
        let host = s.host();
        assert_eq!(s.send(post(&host, "/fail/hard", "{}")).await.status, 403);
        assert_eq!(s.send(post(&host, "/fail/soft", "{}")).await.status, 200);
        let started = std::time::Instant::now();
        assert_eq!(s.send(post(&host, "/slow", "{}")).await.status, 403);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "timeout honoured"
        );

        let (rec, t) = trace(&s, "/fail/hard", "hard");
        assert_eq!(rec["rejected_by"], "hard");
        assert_eq!(ann(&t, "judge.decision"), "FALLBACK_DENY");
        assert_eq!(ann(&t, "judge.fallback_applied"), "deny");
        let reason = ann(&t, "judge.reason").as_str().unwrap();
        assert!(
            reason.starts_with("adapter error: anthropic returned 500: ")
                && reason.contains("internal failure"),
            "{reason}"
        );
        assert!(t["annotations"].get("judge.input_tokens").is_none());
        let (rec, t) = trace(&s, "/fail/soft", "advisory");
        assert_eq!(rec["action"], "allow");
        assert_eq!(t["action"], "allow");
        assert_eq!(ann(&t, "judge.decision"), "FALLBACK_ALLOW");
        assert_eq!(ann(&t, "judge.fallback_applied"), "skip");
        let (rec, t) = trace(&s, "/slow", "slow");
        assert_eq!(rec["rejected_by"], "slow");
        assert_eq!(
            ann(&t, "judge.reason"),
            "adapter error: no answer within 300ms"
        );
    });
}

#[test]
fn breaker_opens_and_its_half_open_probe_reopens_or_closes_it() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        llm.set_down(true);
        let s = setup(vec![
            Transform::allowlist(&["localhost"]),
            judge(
                "guard",
                "anthropic",
                &llm,
                json!({"circuit_breaker": {"consecutive_failures": 2, "cooldown": "1s"}}),
            ),
        ])
        .await;
        let host = s.host();
        let send = |path: &'static str| {
            let req = post(&host, path, "{}");
            let s = &s;
            async move { s.send(req).await.status }
        };
        assert_eq!(send("/a1").await, 403);
        assert_eq!(send("/a2").await, 403);
        assert_eq!(llm.count(), 2);
        // Open: the fallback applies without a call.
        assert_eq!(send("/open1").await, 403);
        assert_eq!(llm.count(), 2, "no call while open");
        let (_, t) = trace(&s, "/open1", "guard");
        assert_eq!(ann(&t, "judge.circuit_breaker_tripped"), true);
        assert_eq!(ann(&t, "judge.reason"), "circuit breaker open");
        assert_eq!(ann(&t, "judge.decision"), "FALLBACK_DENY");
        // After the cooldown one probe goes out; it fails, so the breaker reopens.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(send("/probe1").await, 403);
        assert_eq!(llm.count(), 3, "the half-open probe");
        let (_, t) = trace(&s, "/probe1", "guard");
        assert!(
            t["annotations"]
                .get("judge.circuit_breaker_tripped")
                .is_none()
        );
        assert_eq!(send("/open2").await, 403);
        assert_eq!(llm.count(), 3, "reopened with a fresh cooldown");
        // The LLM recovers: the next probe succeeds and closes the breaker.
        llm.set_down(false);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(send("/probe2").await, 200);
        assert_eq!(send("/closed").await, 200);
        assert_eq!(llm.count(), 5, "closed: every request is judged again");
        let (_, t) = trace(&s, "/closed", "guard");
        assert_eq!(ann(&t, "judge.decision"), "ALLOW");
    });
}

/// A POST over HTTP/2 to the agent's MITM listener.
async fn h2_post(m: &MitmAgent, port: u16, path: &str) -> u16 {
    let tcp = tokio::net::TcpStream::connect(m.agent.addr("https"))
        .await
        .unwrap();
    let tls = tls_connect(tcp, &m.mitm.client_config(), "localhost", &[b"h2"]).await;
    let mut sender = h2_handshake(tls).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{port}{path}"))
        .body(Full::new(Bytes::from_static(b"{\"x\":1}")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[test]
fn judges_http2_and_tunnelled_requests() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let llm = FakeLlm::start().await;
        let (origin, origin_ca) = iron_agent_tests::mitm::localhost_origin().await;
        let plain = iron_agent_tests::Origin::start(iron_agent_tests::OriginKind::Http, None).await;
        let transforms = vec![
            Transform::allowlist(&["localhost"]),
            judge("guard", "anthropic", &llm, json!({})),
        ];
        let m = MitmAgent::prepare(&[])
            .trust(&origin_ca)
            .env("JUDGE_KEY", KEY)
            .start(|c, k| {
                AgentConfig::loopback(c, k)
                    .tunnel_listener()
                    .transforms(transforms)
            });
        // HTTP/2 on the MITM listener.
        assert_eq!(h2_post(&m, origin.port(), "/h2/ok").await, 200);
        assert_eq!(h2_post(&m, origin.port(), "/deny/h2").await, 403);
        // Plain HTTP inside a CONNECT tunnel: each inner request is judged.
        let target = format!("localhost:{}", plain.port());
        let inner = |path: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
        };
        let status_of = |resp: String| resp.split(' ').nth(1).unwrap_or("").to_string();
        let resp = tunnel_exchange(&m, &target, &inner("/tunnel/ok")).await;
        assert_eq!(status_of(resp), "200");
        let resp = tunnel_exchange(&m, &target, &inner("/deny/tunnel")).await;
        assert_eq!(status_of(resp), "403");
        assert_eq!(llm.count(), 4);
        let urls: Vec<Value> = llm.calls().iter().map(|c| llm::envelope(c)["url"].clone()).collect();
        assert_eq!(urls, ["/h2/ok", "/deny/h2", "/tunnel/ok", "/deny/tunnel"]);
        let rec = m.agent.audit_where(|a| a["path"] == "/deny/tunnel");
        assert_eq!(rec["rejected_by"], "guard");
        assert_eq!(rec["tunnel"]["target"], target);
        let rec = m.agent.audit_where(|a| a["path"] == "/deny/h2");
        assert_eq!(rec["rejected_by"], "guard");
    });
}

/// Opens a CONNECT tunnel to `target`, sends `request` inside, returns everything read back.
async fn tunnel_exchange(m: &MitmAgent, target: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = iron_agent_tests::connect_tunnel(m.agent.addr("tunnel"), target).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn check_config(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(agent_bin())
        .args([
            "check-config",
            "--no-host-checks",
            "--config",
            path.to_str().unwrap(),
        ])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_with(transforms: Vec<Transform>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = TestCa::new("c").write(dir.path());
    let yaml = AgentConfig::loopback(&c, &k)
        .transforms(transforms)
        .to_yaml();
    std::mem::forget(dir); // the CA files must outlive the check
    yaml
}

#[test]
fn config_errors_name_the_field() {
    let bad = |cfg: Value| Transform::new("judge", cfg);
    let yaml = config_with(vec![
        bad(json!({"prompt": "p", "rules": [], "provider": {"model": "m", "api_key_env": "K"}})),
        bad(json!({"name": "a", "prompt": "p", "rules": [{"host": "x"}],
            "provider": {"type": "openai", "model": "m", "api_key_env": "K",
                "api_key": {"type": "env", "var": "K"}},
            "timeout": "0s", "max_concurrent": 0})),
        bad(json!({"name": "b", "prompt": "p", "rules": [{"host": "x"}],
            "provider": {"type": "anthropic", "api_key_env": "UNSET_KEY", "base_url": "ftp://x"}})),
    ]);
    let (code, err) = check_config(&yaml, &[("K", "k")]);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "transforms[0].config.name: is required",
        "transforms[0].config.rules: at least one rule is required",
        "transforms[0].config.provider.type: is required",
        "transforms[1].config.provider.api_key: api_key and api_key_env are mutually exclusive",
        "transforms[1].config.timeout: must be positive",
        "transforms[1].config.max_concurrent: must be positive",
        "transforms[2].config.provider.model: is required",
        "transforms[2].config.provider.base_url: must be an http(s) URL",
        "transforms[2].config.provider.api_key_env: env var \"UNSET_KEY\" is empty or not set",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let yaml = config_with(vec![bad(
        json!({"name": "a", "prompt": "p", "rules": [{"host": "x"}],
        "fallback": "allow", "provider": {"type": "anthropic", "model": "m", "api_key_env": "K"}}),
    )]);
    let (code, err) = check_config(&yaml, &[("K", "k")]);
    assert_eq!(code, 1);
    assert!(err.contains("transforms[0].config.fallback"), "{err}");
    assert!(!err.contains("not supported yet"), "{err}");
}

/// The example in docs/transforms/judge.md passes `check-config`.
#[test]
fn documented_example_is_a_valid_config() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/transforms/judge.md"),
    )
    .unwrap();
    let start = doc.find("```yaml\n").expect("a yaml example") + "```yaml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    assert!(example.contains("name: judge"), "{example}");
    let env = [("ANTHROPIC_API_KEY", "k"), ("OPENAI_API_KEY", "k")];
    let (code, err) = check_config(example, &env);
    assert_eq!(code, 0, "{err}\n{example}");
    // Without the key the same config names the field.
    let (code, err) = check_config(example, &[("OPENAI_API_KEY", "k")]);
    assert_eq!(code, 1);
    assert!(err.contains(".config.provider.api_key_env"), "{err}");
}
