//! Pins the exact bytes of serialised audit lines for representative records: the audit log is
//! iron-proxy's schema, and log pipelines parse it. Any serializer change must keep these.

use serde_json::{Map, Value, json};

use super::record::{
    Action, AuditRecord, BodyCapture, PostgresAudit, Trace, TraceAction, TunnelAudit,
};

const TIME: &str = "2026-01-02T03:04:05.123456789Z";

fn trace(name: &str, action: TraceAction, ms: f64) -> Trace {
    Trace {
        name: name.into(),
        action,
        duration_ms: ms,
        error: None,
        annotations: Map::new(),
    }
}

fn base(host: &str, method: &str, path: &str) -> AuditRecord {
    AuditRecord {
        host: host.into(),
        method: method.into(),
        path: path.into(),
        remote_addr: "127.0.0.1:50000".into(),
        sni: host.into(),
        mode: "mitm",
        protocol: "https",
        ..Default::default()
    }
}

fn allow() -> AuditRecord {
    let mut r = base("api.example.com", "GET", "/v1/models");
    r.action = Action::Allow;
    r.status_code = 200;
    r.duration_ms = 12.345;
    r.request_transforms = vec![trace("allowlist", TraceAction::Allow, 0.004)];
    r
}

fn reject() -> AuditRecord {
    let mut r = base("evil.example.net", "POST", "/upload?x=1");
    r.action = Action::Reject;
    r.status_code = 403;
    r.duration_ms = 0.25;
    let mut allow = trace("annotate", TraceAction::Allow, 0.001);
    allow
        .annotations
        .insert("header:X-Team".into(), json!("blue"));
    r.request_transforms = vec![allow, trace("allowlist", TraceAction::Reject, 0.0)];
    r.rejected_by = Some("allowlist".into());
    r
}

fn error() -> AuditRecord {
    let mut r = base("down.example.org", "PUT", "/");
    r.action = Action::Error;
    r.status_code = 502;
    r.duration_ms = 3000.0;
    r.request_transforms = vec![trace("allowlist", TraceAction::Allow, 0.002)];
    r.error = Some("upstream: connection refused: \"tcp connect\"\n\t\u{1}".into());
    r.protocol = "http";
    r.mode = "mitm";
    r.sni = String::new();
    r
}

fn traces_with_annotations() -> AuditRecord {
    let mut r = base("ünïcode.example", "PATCH", "/päth/\u{2028}");
    r.status_code = 201;
    r.duration_ms = 1e-7;
    let mut t = trace("oauth_token", TraceAction::Allow, 1.5);
    t.annotations
        .insert("credential".into(), json!("tokens[0]"));
    t.annotations.insert("cached".into(), json!(true));
    t.annotations.insert("expires_in_s".into(), json!(3599));
    t.annotations.insert("ratio".into(), json!(0.5));
    t.annotations
        .insert("nested".into(), json!({"b": [1, null, "x"], "a": {}}));
    let mut e = trace("gcp_auth", TraceAction::Error, 20.0);
    e.error = Some("token endpoint https://oauth2.example/token returned HTTP 500".into());
    e.annotations
        .insert("error".into(), json!("token_endpoint_http_500"));
    r.request_transforms = vec![t, e];
    let mut resp = trace("secrets", TraceAction::Allow, 0.0);
    resp.annotations
        .insert("swapped".into(), Value::Array(vec![]));
    r.response_transforms = vec![resp];
    r.reason = Some("sni_host_mismatch".into());
    r
}

fn stub_with_body_capture() -> AuditRecord {
    let mut r = base("llm.example.com", "POST", "/v1/chat");
    r.action = Action::Stub;
    r.status_code = 200;
    r.duration_ms = 0.5;
    r.request_transforms = vec![
        trace("body_capture", TraceAction::Allow, 0.01),
        trace("stub", TraceAction::Stub, 0.02),
    ];
    r.stubbed_by = Some("stub".into());
    r.body_capture = Some(BodyCapture {
        request_body: "{\"prompt\":\"hi\"}\u{0}".into(),
        request_body_truncated: true,
    });
    r
}

fn identity_and_tunnel() -> AuditRecord {
    let mut r = base("pkg.example.com", "GET", "/simple/");
    r.status_code = 304;
    r.duration_ms = 100.0;
    r.uid = Some(1001);
    r.user = Some("ci-runner".into());
    r.pid = Some(4242);
    r.comm = Some("pip".into());
    r.orig_dst = Some("[2001:db8::1]:443".into());
    r.policy = Some("ci".into());
    r.mode = "ebpf";
    r.tunnel = Some(TunnelAudit {
        target: "pkg.example.com:443".into(),
        protocol: "connect",
        request_transforms: vec![trace("allowlist", TraceAction::Allow, 0.003)],
    });
    r
}

/// A PostgreSQL session record (no HTTP fields of its own).
fn postgres_session() -> AuditRecord {
    AuditRecord {
        remote_addr: "127.0.0.1:50000".into(),
        mode: "postgres",
        protocol: "postgres",
        duration_ms: 2.5,
        uid: Some(1001),
        postgres: Some(PostgresAudit {
            event: "session",
            database: "appdb".into(),
            user: "app".into(),
            upstream: "db.internal:5432".into(),
            role: Some("tenant_role".into()),
            upstream_tls: Some(true),
            statements: Some(3),
            statements_refused: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn response_reject_cancel() -> [AuditRecord; 2] {
    let mut r = base("api.example.com", "GET", "/");
    r.action = Action::Reject;
    r.status_code = 502;
    r.request_transforms = vec![trace("allowlist", TraceAction::Allow, 0.0)];
    r.response_transforms = vec![trace("response_filter", TraceAction::Reject, 0.1)];
    r.rejected_by = Some("response_filter".into());
    let mut c = base("api.example.com", "GET", "/stream");
    c.action = Action::ClientCancel;
    c.status_code = 200;
    c.stubbed_by = None;
    c.rejected_by = Some("explicit".into());
    [r, c]
}

/// The serialised line (with its newline) for `rec` at [`TIME`].
fn line(rec: AuditRecord) -> String {
    let level = rec.level();
    let time =
        time::OffsetDateTime::parse(TIME, &time::format_description::well_known::Rfc3339).unwrap();
    let mut out = Vec::new();
    super::line::write(&mut out, time, level, &rec);
    String::from_utf8(out).unwrap()
}

/// The expected lines, in the order of [`records`] (each ends with a newline).
const EXPECTED: [&str; 9] = [
    // allow
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"api.example.com","method":"GET","path":"/v1/models","action":"allow","status_code":200,"duration_ms":12.345,"request_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.004}],"response_transforms":[],"remote_addr":"127.0.0.1:50000","sni":"api.example.com","mode":"mitm","protocol":"https"}
"#,
    // reject
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"WARN","msg":"request","host":"evil.example.net","method":"POST","path":"/upload?x=1","action":"reject","status_code":403,"duration_ms":0.25,"request_transforms":[{"name":"annotate","action":"allow","duration_ms":0.001,"annotations":{"header:X-Team":"blue"}},{"name":"allowlist","action":"reject","duration_ms":0.0}],"response_transforms":[],"rejected_by":"allowlist","remote_addr":"127.0.0.1:50000","sni":"evil.example.net","mode":"mitm","protocol":"https"}
"#,
    // error
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"ERROR","msg":"request","host":"down.example.org","method":"PUT","path":"/","action":"error","status_code":502,"duration_ms":3000.0,"request_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.002}],"response_transforms":[],"error":"upstream: connection refused: \"tcp connect\"\n\t\u0001","remote_addr":"127.0.0.1:50000","sni":"","mode":"mitm","protocol":"http"}
"#,
    // traces_with_annotations (U+2028 passes through unescaped, as serde_json writes it)
    concat!(
        r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"ünïcode.example","method":"PATCH","path":"/päth/"#,
        "\u{2028}",
        r#"","action":"allow","status_code":201,"duration_ms":1e-7,"request_transforms":[{"name":"oauth_token","action":"allow","duration_ms":1.5,"annotations":{"credential":"tokens[0]","cached":true,"expires_in_s":3599,"ratio":0.5,"nested":{"b":[1,null,"x"],"a":{}}}},{"name":"gcp_auth","action":"error","duration_ms":20.0,"error":"token endpoint https://oauth2.example/token returned HTTP 500","annotations":{"error":"token_endpoint_http_500"}}],"response_transforms":[{"name":"secrets","action":"allow","duration_ms":0.0,"annotations":{"swapped":[]}}],"reason":"sni_host_mismatch","remote_addr":"127.0.0.1:50000","sni":"ünïcode.example","mode":"mitm","protocol":"https"}
"#,
    ),
    // stub_with_body_capture
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"llm.example.com","method":"POST","path":"/v1/chat","action":"stub","status_code":200,"duration_ms":0.5,"request_transforms":[{"name":"body_capture","action":"allow","duration_ms":0.01},{"name":"stub","action":"stub","duration_ms":0.02}],"response_transforms":[],"stubbed_by":"stub","remote_addr":"127.0.0.1:50000","sni":"llm.example.com","mode":"mitm","protocol":"https","body_capture":{"request_body":"{\"prompt\":\"hi\"}\u0000","request_body_truncated":true}}
"#,
    // identity_and_tunnel
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"pkg.example.com","method":"GET","path":"/simple/","action":"allow","status_code":304,"duration_ms":100.0,"request_transforms":[],"response_transforms":[],"remote_addr":"127.0.0.1:50000","sni":"pkg.example.com","mode":"ebpf","protocol":"https","uid":1001,"user":"ci-runner","pid":4242,"comm":"pip","orig_dst":"[2001:db8::1]:443","policy":"ci","tunnel":{"target":"pkg.example.com:443","protocol":"connect","request_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.003}]}}
"#,
    // response_reject
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"WARN","msg":"request","host":"api.example.com","method":"GET","path":"/","action":"reject","status_code":502,"duration_ms":0.0,"request_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.0}],"response_transforms":[{"name":"response_filter","action":"reject","duration_ms":0.1}],"rejected_by":"response_filter","remote_addr":"127.0.0.1:50000","sni":"api.example.com","mode":"mitm","protocol":"https"}
"#,
    // client_cancel
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"api.example.com","method":"GET","path":"/stream","action":"client_cancel","status_code":200,"duration_ms":0.0,"request_transforms":[],"response_transforms":[],"rejected_by":"explicit","remote_addr":"127.0.0.1:50000","sni":"api.example.com","mode":"mitm","protocol":"https"}
"#,
    // postgres_session
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"","method":"","path":"","action":"allow","status_code":0,"duration_ms":2.5,"request_transforms":[],"response_transforms":[],"remote_addr":"127.0.0.1:50000","sni":"","mode":"postgres","protocol":"postgres","uid":1001,"postgres":{"event":"session","database":"appdb","user":"app","upstream":"db.internal:5432","role":"tenant_role","upstream_tls":true,"statements":3,"statements_refused":1}}
"#,
];

fn records() -> [AuditRecord; 9] {
    let [response_reject, client_cancel] = response_reject_cancel();
    [
        allow(),
        reject(),
        error(),
        traces_with_annotations(),
        stub_with_body_capture(),
        identity_and_tunnel(),
        response_reject,
        client_cancel,
        postgres_session(),
    ]
}

/// The hand-written line serializer writes every field serde would: a field added to
/// `AuditRecord` but not to `line.rs` would otherwise vanish from the log silently.
#[test]
fn lines_carry_every_serde_field() {
    for rec in records() {
        let want = serde_json::to_value(&rec).unwrap();
        let mut got: Value = serde_json::from_str(&line(rec)).unwrap();
        let got = got.as_object_mut().unwrap();
        for head in ["time", "level", "msg"] {
            got.remove(head);
        }
        assert_eq!(Value::Object(got.clone()), want);
    }
}

#[test]
fn serialised_lines_are_byte_for_byte_stable() {
    for (i, (rec, want)) in records().into_iter().zip(EXPECTED).enumerate() {
        assert_eq!(line(rec), want, "record {i}");
    }
}

#[test]
fn every_line_is_one_json_object() {
    for rec in records() {
        let l = line(rec);
        assert!(l.ends_with('\n') && !l[..l.len() - 1].contains('\n'), "{l}");
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["time"], TIME);
        assert_eq!(v["msg"], "request");
    }
}

/// The records `iron-agent bench-audit` measures (keep-alive allowlist-only, and credential
/// proxying with the secrets transform's annotations): the lines the optimised serializer writes
/// for exactly what the benchmark times.
const BENCH_EXPECTED: [&str; 2] = [
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"api.example.com","method":"GET","path":"/v1/models","action":"allow","status_code":200,"duration_ms":1.234,"request_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.004}],"response_transforms":[],"remote_addr":"127.0.0.1:51234","sni":"api.example.com","mode":"mitm","protocol":"https"}
"#,
    r#"{"time":"2026-01-02T03:04:05.123456789Z","level":"INFO","msg":"request","host":"api.example.com","method":"POST","path":"/v1/chat/completions","action":"allow","status_code":200,"duration_ms":153.817,"request_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.004},{"name":"secrets","action":"allow","duration_ms":0.021,"annotations":{"swapped":[{"secret":"OPENAI_API_KEY","locations":["header:Authorization"]}]}}],"response_transforms":[{"name":"allowlist","action":"allow","duration_ms":0.0},{"name":"secrets","action":"allow","duration_ms":0.001}],"remote_addr":"127.0.0.1:51234","sni":"api.example.com","mode":"mitm","protocol":"https"}
"#,
];

#[test]
fn benchmarked_lines_are_byte_for_byte_stable() {
    for (i, want) in BENCH_EXPECTED.into_iter().enumerate() {
        assert_eq!(
            line(super::bench::build(i as u64)),
            want,
            "bench record {i}"
        );
    }
}
