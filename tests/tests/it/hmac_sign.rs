//! `hmac_sign` end to end: client → agent (MITM) → an HTTPS upstream that recomputes every
//! signature with an independent implementation (Python's hmac/hashlib) and answers 401 on a
//! mismatch. Covers each algorithm, key and output encoding and timestamp format, bodies and
//! queries, credentials in headers and in the message, every reachable rejection, config-time
//! template errors, one audit record per request, and no credential in the agent's output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod schemes;
mod upstream;

use std::process::Command;
use std::time::Duration;

use self::schemes::*;
use self::upstream::{Scheme, Upstream, raw_https};
use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::agent::agent_bin;
use iron_agent_tests::mitm::{MitmAgent, Setup};
use iron_agent_tests::{Agent, AgentConfig, Reply, TestCa, Transform};
use serde_json::{Value, json};

impl iron_agent_tests::mitm::Upstream for Upstream {
    fn port(&self) -> u16 {
        self.port
    }
}

/// How long stragglers get to show up before audit records are counted.
const SETTLE: Duration = Duration::from_millis(300);

/// Raw requests to the agent's MITM listener.
trait RawClient {
    async fn raw(&self, raw: &str, half_close: bool) -> upstream::RawReply;
}

impl RawClient for MitmAgent {
    async fn raw(&self, raw: &str, half_close: bool) -> upstream::RawReply {
        raw_https(
            self.agent.addr("https"),
            self.mitm.client_config(),
            raw.as_bytes(),
            half_close,
        )
        .await
    }
}

/// Agent + verifier for `schemes`; `max_body` is `proxy.max_request_body_bytes`. A credential
/// whose value is empty has its env var left unset.
fn setup(schemes: &[Scheme], max_body: Option<i64>) -> Setup<Upstream> {
    let origin_ca = TestCa::new("hmac upstream");
    let mut b = MitmAgent::prepare(&[]).trust(&origin_ca);
    let upstream = Upstream::start(b.dir(), &origin_ca, schemes);
    let transforms: Vec<Transform> = std::iter::once(Transform::allowlist(&["localhost"]))
        .chain(
            schemes
                .iter()
                .filter(|s| s.agent_signs)
                .map(Scheme::transform),
        )
        .collect();
    for s in schemes {
        for (_, var, value) in s.creds.iter().filter(|c| !c.2.is_empty()) {
            b = b.env(var, value);
        }
    }
    let m = b.start(|c, k| {
        AgentConfig::loopback(c, k)
            .transforms(transforms)
            .with(|c| {
                c.proxy.upstream_response_header_timeout = Some("5s".into());
                c.proxy.max_request_body_bytes = max_body;
            })
    });
    assert!(
        m.agent.listeners.contains_key("https"),
        "agent did not start:\n{}",
        m.agent.logs()
    );
    Setup {
        m,
        origin: upstream,
    }
}

fn request(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body))).unwrap()
}

fn verified(r: &Reply, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ok"], true, "{what}: {v}");
    v
}

fn hmac_trace(audit: &Value) -> Value {
    audit["request_transforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hmac_sign" && t.get("annotations").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no annotated hmac_sign trace: {audit}"))
}

#[test]
fn every_algorithm_encoding_and_timestamp_verifies_upstream() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup(&schemes(), None);
        let host = s.host();
        let mut sent = 0;
        let binary: &[u8] = &[0x00, 0x9f, 0x92, 0x96, 0xff, b'\n', b'{'];
        for scheme in schemes().iter().filter(|s| s.agent_signs) {
            let n = scheme.name;
            let cases: [(&str, String, &[u8]); 4] = [
                ("GET", format!("/s/{n}/orders"), b""),
                (
                    "GET",
                    format!("/s/{n}/orders?symbol=BTC-USD&limit=5&q=a%20b"),
                    b"",
                ),
                (
                    "POST",
                    format!("/s/{n}/orders?client_oid=42"),
                    br#"{"side":"buy","size":"0.01"}"#,
                ),
                ("PUT", format!("/s/{n}/blob"), binary),
            ];
            for (method, target, body) in cases {
                let r = s
                    .send(request(
                        method,
                        &host,
                        &target,
                        &[("content-type", "application/octet-stream")],
                        body,
                    ))
                    .await;
                let v = verified(&r, &format!("{n} {method} {target}"));
                assert_eq!(v["body_len"], body.len());
                sent += 1;
            }
        }

        // The configured casing reaches the wire, and a placeholder the workload sent for a
        // signed header is replaced, not duplicated (the verifier wants exactly one).
        let r = s
            .send(request(
                "POST",
                &host,
                "/s/falconx/orders",
                &[
                    ("fx-access-sign", "workload-placeholder"),
                    ("Fx-Access-Key", "workload-placeholder"),
                ],
                b"{}",
            ))
            .await;
        let v = verified(&r, "falconx with placeholders");
        sent += 1;
        let received: Vec<&str> = v["received"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        for name in [
            "FX-ACCESS-KEY",
            "FX-ACCESS-SIGN",
            "FX-ACCESS-TIMESTAMP",
            "FX-ACCESS-PASSPHRASE",
        ] {
            assert!(received.contains(&name), "{name} casing: {received:?}");
        }

        // The verifier is live: unsigned and forged requests fail there.
        let r = s
            .send(request("GET", &host, "/s/unsigned/orders", &[], b""))
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
        let r = s
            .send(request(
                "GET",
                &host,
                "/s/unsigned/orders",
                &[("X-Ts", "1700000000"), ("X-Sig", "Zm9yZ2Vk")],
                b"",
            ))
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
        sent += 2;

        let audits = s.assert_audit_count(sent, SETTLE);
        let a = audits
            .iter()
            .find(|a| a["path"] == "/s/falconx/orders" && a["method"] == "POST")
            .unwrap();
        assert_eq!(a["action"], "allow");
        assert_eq!(
            hmac_trace(a)["annotations"],
            json!({"injected": [
                "header:FX-ACCESS-KEY",
                "header:FX-ACCESS-SIGN",
                "header:FX-ACCESS-TIMESTAMP",
                "header:FX-ACCESS-PASSPHRASE"
            ]})
        );
        let a = audits.iter().find(|a| a["path"] == "/s/sha1/blob").unwrap();
        assert_eq!(
            hmac_trace(a)["annotations"]["injected"],
            json!(["header:Authorization", "header:X-Ts"])
        );
        // Transforms whose rules do not match leave no annotations.
        let unsigned = audits
            .iter()
            .find(|a| a["path"] == "/s/unsigned/orders")
            .unwrap();
        assert!(
            unsigned["request_transforms"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t.get("annotations").is_none()),
            "{unsigned}"
        );
        assert_eq!(s.origin.requests().len(), sent);
        s.assert_not_in_logs(&ALL_SECRETS);
    });
}

fn assert_json_reject(status: u16, body: &[u8], want_status: u16, reason: &str) {
    assert_eq!(status, want_status, "{}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v, json!({"error": "hmac_sign", "reason": reason}));
}

#[test]
fn body_integrity_and_every_reachable_rejection() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup(&rejection_schemes(), Some(64));
        let host = s.host();
        let mut sent = 0;

        // Chunked body without allow_chunked_body: 400, never forwarded.
        let chunked = |path: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
        };
        let r = s.raw(&chunked("/s/strict/x", "{\"a\":1}"), false).await;
        assert_json_reject(r.status, &r.body, 400, "chunked_body_not_allowed");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            r.head
        );
        sent += 1;
        // With allow_chunked_body: signed over the buffered body, re-framed with a length.
        let r = s.raw(&chunked("/s/chunky/x", "{\"a\":1}"), false).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["ok"], true);
        assert_eq!(r.json()["framing"], 7);
        sent += 1;

        // Over the 64-byte buffer limit: 413, whether the length is declared or chunked.
        let big = "x".repeat(100);
        let r = s
            .send(request("POST", &host, "/s/strict/big", &[], big.as_bytes()))
            .await;
        assert_eq!(r.status, 413, "{}", r.text());
        let r = s.raw(&chunked("/s/chunky/big", &big), false).await;
        assert_eq!(r.status, 413);
        sent += 2;

        // A body shorter than its Content-Length (the client gave up): 400 body_read_failed.
        let short = format!(
            "POST /s/strict/short HTTP/1.1\r\nHost: {host}\r\nContent-Length: 50\r\nConnection: close\r\n\r\n0123456789"
        );
        let r = s.raw(&short, true).await;
        assert_json_reject(r.status, &r.body, 400, "body_read_failed");
        sent += 1;

        let r = s.send(request("GET", &host, "/s/badkey/x", &[], b"")).await;
        assert_json_reject(r.status, &r.body, 500, "key_decode_failed");
        let r = s.send(request("GET", &host, "/s/nocred/x", &[], b"")).await;
        assert_json_reject(r.status, &r.body, 502, "credential_unavailable");
        let r = s
            .send(request("GET", &host, "/s/badheader/x", &[], b""))
            .await;
        assert_json_reject(r.status, &r.body, 500, "header_template_failed");
        sent += 3;

        let audits = s.assert_audit_count(sent, SETTLE);
        let by_path = |p: &str| -> Value {
            audits
                .iter()
                .find(|a| a["path"] == p)
                .cloned()
                .unwrap_or_else(|| panic!("no audit for {p}"))
        };
        let ann = |p: &str| hmac_trace(&by_path(p))["annotations"].clone();

        let a = by_path("/s/strict/x");
        assert_eq!(a["action"], "reject");
        assert_eq!(a["status_code"], 400);
        assert_eq!(a["rejected_by"], "hmac_sign");
        assert_eq!(ann("/s/strict/x"), json!({"rejected": "chunked_body_not_allowed"}));
        assert_eq!(by_path("/s/chunky/x")["action"], "allow");

        let a = by_path("/s/strict/big");
        assert_eq!(a["status_code"], 413);
        assert_eq!(a["reason"], "body_too_large");
        assert_eq!(a["rejected_by"], "hmac_sign");
        assert_eq!(
            ann("/s/strict/big"),
            json!({"content_length": 100, "rejected": "body_too_large"})
        );
        assert_eq!(ann("/s/chunky/big")["rejected"], "body_too_large");

        let a = ann("/s/strict/short");
        assert_eq!(a["rejected"], "body_read_failed");
        assert!(a["error"].is_string(), "{a}");

        let a = ann("/s/badkey/x");
        assert_eq!(a["rejected"], "key_decode_failed");
        assert_eq!(
            a["error"], "decoding base64 key: invalid character at offset 3",
            "names the position, never the key"
        );
        assert_eq!(by_path("/s/badkey/x")["status_code"], 500);

        let a = ann("/s/nocred/x");
        assert_eq!(a["rejected"], "credential_unavailable");
        assert_eq!(a["credential"], "passphrase");
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("NOCRED_PASSPHRASE_UNSET"),
            "{a}"
        );
        assert_eq!(by_path("/s/nocred/x")["status_code"], 502);

        let a = ann("/s/badheader/x");
        assert_eq!(a["rejected"], "header_template_failed");
        assert_eq!(a["header"], "X-Passphrase");
        assert_eq!(a["error"], "rendered value is not a valid header value");

        // Only the chunked request allowed to be signed reached the verifier.
        assert_eq!(
            s.origin.requests(),
            vec!["POST /s/chunky/x".to_string()]
        );
        let logs = s.agent.logs();
        assert!(
            logs.contains("hmac_sign signing chunked request body without length verification"),
            "{logs}"
        );
        s.assert_not_in_logs(&[
            DEF_SECRET,
            RFC_SECRET,
            "not*base64!key-4711",
            PRE_SECRET,
            HEX_SECRET,
            "line-passphrase-99",
        ]);
    });
}

/// Runs `iron-agent check-config` on an `hmac_sign` entry; returns (exit code, stderr).
fn check_config(entry: &Transform) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let cfg = AgentConfig::loopback(&c, &k).transforms([entry.clone()]);
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, cfg.to_yaml()).unwrap();
    let out = Command::new(agent_bin())
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn entry(message: &str, headers: Value, credentials: Value) -> Transform {
    Transform::new(
        "hmac_sign",
        json!({
            "signature": {"message": message},
            "credentials": credentials,
            "headers": headers,
            "rules": [{"host": "api.example.com"}],
        }),
    )
}

#[test]
fn template_and_credential_mistakes_are_config_errors() {
    let creds =
        || json!({"secret": {"type": "env", "var": "S"}, "key": {"type": "env", "var": "K"}});
    let sig = || json!([{"name": "X-Sig", "value": "{{.Signature}}"}]);
    let good = entry(
        "{{.Timestamp}}{{.Credentials.key}}{{.Body}}",
        sig(),
        creds(),
    );
    let (code, stderr) = check_config(&good);
    assert_eq!(code, 0, "{stderr}");

    let cases = [
        (
            entry("{{.Timestamp}}{{.Nope}}", sig(), creds()),
            "transforms[0].config.signature.message",
            ".Nope",
        ),
        (
            entry("{{.Signature}}", sig(), creds()),
            "transforms[0].config.signature.message",
            ".Signature",
        ),
        (
            entry(
                "{{.Body}}",
                json!([{"name": "X-Sig", "value": "{{.Body}}"}]),
                creds(),
            ),
            "transforms[0].config.headers[0].value",
            ".Body",
        ),
        (
            entry(
                "{{.Body}}",
                json!([{"name": "X-Key", "value": "{{.Credentials.missing}}"}]),
                creds(),
            ),
            "transforms[0].config.headers[0].value",
            ".Credentials.missing",
        ),
        (
            entry("{{.Credentials.other}}", sig(), creds()),
            "transforms[0].config.signature.message",
            ".Credentials.other",
        ),
        (
            entry("{{.Body", sig(), creds()),
            "transforms[0].config.signature.message",
            "template syntax",
        ),
        (
            entry(
                "{{.Body}}",
                sig(),
                json!({"key": {"type": "env", "var": "K"}}),
            ),
            "transforms[0].config.credentials",
            "\"secret\"",
        ),
        (
            entry(
                "{{.Body}}",
                json!([{"name": "X Sig", "value": "{{.Signature}}"}]),
                creds(),
            ),
            "transforms[0].config.headers[0].name",
            "not a valid header name",
        ),
    ];
    for (cfg, field, detail) in cases {
        let (code, stderr) = check_config(&cfg);
        assert_eq!(code, 1, "{cfg:?}\n{stderr}");
        assert!(
            stderr.contains(field) && stderr.contains(detail),
            "want {field} / {detail} in:\n{stderr}"
        );
    }

    // `run` refuses the same config before listening.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("c");
    let (c, k) = ca.write(dir.path());
    let bad = entry("{{.Nope}}", sig(), creds());
    let mut agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms([bad])).start();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(agent.listeners.is_empty());
    assert!(
        agent.logs().contains("signature.message"),
        "{}",
        agent.logs()
    );
}
