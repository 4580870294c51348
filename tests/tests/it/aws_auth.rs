//! `aws_auth` end to end: a workload request signed with placeholder credentials goes through
//! the agent (real TLS both sides) to a fake AWS endpoint (`tests/helpers/aws_sigv4_upstream.py`) that
//! recomputes the SigV4 signature with botocore and the real credentials, as AWS would. A 200
//! from it means the re-signed request is valid; a 403 carries botocore's reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::mitm::{MitmAgent, Setup, Upstream};
use iron_agent_tests::{AgentConfig, Reply, TestCa, Transform, https_request};
use serde_json::{Value, json};

const REAL_AK: &str = "AKIAREALKEY000000001";
const REAL_SK: &str = "real/secret+access-key-0123456789abcdefgh";
const REAL_TOKEN: &str = "real-session-token-FwoGZXIvYXdzEXAMPLE";
const PLACEHOLDER_AK: &str = "AKIAIOSFODNN7EXAMPLE";

/// The fake AWS endpoint (a Python child process, killed on drop).
struct AwsEndpoint {
    child: Child,
    port: u16,
}

impl Drop for AwsEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_upstream(dir: &Path, ca: &TestCa) -> AwsEndpoint {
    let (cert_path, key_path) = ca.write_server_cert(dir, "upstream", &["localhost"]);
    let script = iron_agent_tests::helper("aws_sigv4_upstream.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&cert_path)
        .arg(&key_path)
        .env("REAL_ACCESS_KEY_ID", REAL_AK)
        .env("REAL_SECRET_ACCESS_KEY", REAL_SK)
        .env("REAL_SESSION_TOKEN", REAL_TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with botocore (cargo xtask setup installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .unwrap_or_else(|| panic!("upstream did not start: {line:?}"))
        .parse()
        .unwrap();
    AwsEndpoint { child, port }
}

impl Upstream for AwsEndpoint {
    fn port(&self) -> u16 {
        self.port
    }
}

/// Starts the fake AWS endpoint and the agent with `transforms` and the agent's environment.
fn setup(transforms: Vec<Transform>, env: &[(&str, &str)]) -> Setup<AwsEndpoint> {
    let origin_ca = TestCa::new("aws-origin");
    let b = MitmAgent::prepare(&[]).trust(&origin_ca).envs(env);
    let upstream = start_upstream(b.dir(), &origin_ca);
    let transforms = b.expand_transforms(transforms);
    let m = b.start(|c, k| {
        AgentConfig::loopback(c, k)
            .tunnel_listener()
            .transforms(transforms)
            .with(|c| c.proxy.max_request_body_bytes = Some(4096))
    });
    Setup {
        m,
        origin: upstream,
    }
}

/// What these tests check on the agent, beyond [`MitmAgent`]'s own helpers.
trait AwsChecks {
    fn trace(&self, path: &str) -> Value;
    async fn send_partial(&self, host: &str, path: &str) -> Option<u16>;
    fn assert_no_credentials_in_logs(&self);
}

impl AwsChecks for MitmAgent {
    /// The trace of the `aws_auth` entry that acted on the one audit record for `path` (entries
    /// whose rules do not match leave a trace without annotations).
    fn trace(&self, path: &str) -> Value {
        let rec = self.agent.audit_where(|r| r["path"] == path);
        let acted: Vec<&Value> = rec["request_transforms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"] == "aws_auth" && t.get("annotations").is_some())
            .collect();
        assert_eq!(acted.len(), 1, "one aws_auth entry acts: {rec}");
        acted[0].clone()
    }

    /// Sends a header-signed PUT declaring 100 bytes, writes 10 and closes its side. Returns
    /// the response status if the agent could still answer.
    async fn send_partial(&self, host: &str, path: &str) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(self.agent.addr("https"))
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.mitm.client_config())
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential={PLACEHOLDER_AK}/20200101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00\r\nContent-Length: 100\r\n\r\n0123456789"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tls.read_to_end(&mut out),
        )
        .await;
        let text = String::from_utf8_lossy(&out);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    fn assert_no_credentials_in_logs(&self) {
        self.assert_not_in_logs(&[REAL_AK, REAL_SK, REAL_TOKEN]);
    }
}

/// A request as a workload's SDK would sign it with the placeholder key: the scope is real,
/// the date and signature are junk the agent must replace.
fn signed(
    method: &str,
    host: &str,
    path: &str,
    region: &str,
    service: &str,
    body: &[u8],
) -> http::request::Builder {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={PLACEHOLDER_AK}/20200101/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
        "0".repeat(64)
    );
    let b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("authorization", auth)
        .header("x-amz-date", "20200101T000000Z")
        .header("x-amz-content-sha256", "placeholder-hash")
        .header("x-amz-security-token", "placeholder-token")
        .header("content-type", "application/json");
    if body.is_empty() {
        b
    } else {
        b.header("x-amz-meta-note", "kept and signed")
    }
}

fn body(b: &[u8]) -> Full<Bytes> {
    Full::new(Bytes::copy_from_slice(b))
}

/// 200 from the verifier, or the verifier's reason.
fn assert_verified(r: &Reply) -> Value {
    assert_eq!(
        r.status,
        200,
        "upstream refused the signature: {}",
        r.text()
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ok"], true);
    v
}

fn assert_refused(r: &Reply, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/json",
        "{reason}"
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": "aws_auth", "reason": reason})
    );
}

fn static_keys() -> Vec<Transform> {
    vec![
        Transform::allowlist(&["localhost"]),
        Transform::new(
            "aws_auth",
            json!({
                "access_key_id": {"type": "env", "var": "REAL_AK"},
                "secret_access_key": {"type": "env", "var": "REAL_SK"},
                "allowed_regions": ["us-east-1", "eu-west-1"],
                "allowed_services": ["s3", "bedrock"],
                "rules": [{"host": "localhost", "paths": ["/gated/*"]}],
            }),
        ),
        Transform::new(
            "aws_auth",
            json!({
                "access_key_id": {"type": "env", "var": "REAL_AK"},
                "secret_access_key": {"type": "env", "var": "REAL_SK"},
                "session_token": {"type": "env", "var": "REAL_TOKEN"},
                "rules": [{"host": "localhost", "paths": ["/token/*"]}],
            }),
        ),
        Transform::new(
            "aws_auth",
            json!({
                "access_key_id": {"type": "env", "var": "REAL_AK"},
                "secret_access_key": {"type": "env", "var": "REAL_SK"},
                "unsigned_payload": true,
                "rules": [{"host": "localhost", "paths": ["/unsigned/*"]}],
            }),
        ),
        Transform::new(
            "aws_auth",
            json!({
                "access_key_id": {"type": "env", "var": "REAL_AK"},
                "secret_access_key": {"type": "env", "var": "REAL_SK"},
                "allow_chunked_body": true,
                "rules": [{"host": "localhost", "paths": ["/chunked-ok/*"]}],
            }),
        ),
        Transform::new(
            "aws_auth",
            json!({
                "access_key_id": {"type": "file", "path": "{dir}/missing-key"},
                "secret_access_key": {"type": "env", "var": "REAL_SK"},
                "allowed_regions": ["us-east-1"],
                "rules": [{"host": "localhost", "paths": ["/broken/*"]}],
            }),
        ),
    ]
}

#[test]
fn static_credentials_every_mode_and_rejection() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let s = setup(
            static_keys(),
            &[
                ("REAL_AK", REAL_AK),
                ("REAL_SK", REAL_SK),
                ("REAL_TOKEN", REAL_TOKEN),
            ],
        );
        let host = s.host();
        let mut sent = 0;

        // Header-signed GET (S3: single-encoded, un-normalised path with an escaped space).
        let path = "/gated/bucket/my%20file.txt?versionId=3";
        let r = s
            .send(
                signed("GET", &host, path, "us-east-1", "s3", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        let v = assert_verified(&r);
        assert_eq!(v["service"], "s3");
        assert_eq!(
            v["session_token"], false,
            "placeholder token must be stripped"
        );
        let t = s.trace("/gated/bucket/my file.txt");
        assert_eq!(t["action"], "allow");
        assert_eq!(t["annotations"]["service"], "s3");
        assert_eq!(t["annotations"]["region"], "us-east-1");
        assert_eq!(
            t["annotations"]["injected"],
            serde_json::json!([
                "header:Authorization",
                "header:X-Amz-Date",
                "header:X-Amz-Content-Sha256"
            ])
        );

        // A body is hashed and the hash signed (bedrock: double-encoded path with ':').
        let payload = br#"{"prompt":"hello","max_tokens":10}"#;
        let r = s
            .send(
                signed(
                    "POST",
                    &host,
                    "/gated/model/anthropic.claude-v2%3A1/invoke",
                    "eu-west-1",
                    "bedrock",
                    payload,
                )
                .body(body(payload))
                .unwrap(),
            )
            .await;
        sent += 1;
        let v = assert_verified(&r);
        assert_eq!(v["body_len"], payload.len());
        assert_eq!(v["content_sha256"], v["body_sha256"]);
        assert!(
            v["signed_headers"]
                .as_array()
                .unwrap()
                .contains(&"x-amz-meta-note".into())
        );

        // Pre-signed URL: the query scope is used, then the request is signed in headers and
        // the pre-signing parameters are gone.
        let presigned = format!(
            "/gated/bucket/report.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential={PLACEHOLDER_AK}%2F20200101%2Feu-west-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20200101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host\
             &X-Amz-Signature={}&response-content-type=text%2Fcsv",
            "0".repeat(64)
        );
        let r = s
            .send(
                http::Request::builder()
                    .uri(&presigned)
                    .header("host", &host)
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        let v = assert_verified(&r);
        assert_eq!(
            v["path"],
            "/gated/bucket/report.csv?response-content-type=text%2Fcsv"
        );
        assert_eq!(v["region"], "eu-west-1");
        assert_eq!(
            s.trace("/gated/bucket/report.csv")["annotations"]["presigned"],
            true
        );

        // Session token: set, signed, annotated.
        let r = s
            .send(
                signed("GET", &host, "/token/q", "us-west-2", "dynamodb", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        let v = assert_verified(&r);
        assert_eq!(v["session_token"], true);
        assert!(
            v["signed_headers"]
                .as_array()
                .unwrap()
                .contains(&"x-amz-security-token".into())
        );
        let injected = &s.trace("/token/q")["annotations"]["injected"];
        assert!(
            injected
                .as_array()
                .unwrap()
                .contains(&"header:X-Amz-Security-Token".into()),
            "{injected}"
        );

        // Unsigned payload: the sentinel is signed; the body still arrives intact.
        let r = s
            .send(
                signed(
                    "PUT",
                    &host,
                    "/unsigned/obj",
                    "us-east-1",
                    "s3",
                    b"streamed",
                )
                .body(body(b"streamed"))
                .unwrap(),
            )
            .await;
        sent += 1;
        let v = assert_verified(&r);
        assert_eq!(v["content_sha256"], "UNSIGNED-PAYLOAD");
        assert_eq!(v["body_len"], 8);

        // Chunked body: refused by default, signed when allowed.
        let chunked = |path: &str| {
            signed("PUT", &host, path, "us-east-1", "s3", b"chunk")
                .header("transfer-encoding", "chunked")
                .body(body(b"chunked body"))
                .unwrap()
        };
        let r = s.send(chunked("/gated/chunked")).await;
        sent += 1;
        assert_refused(&r, 400, "chunked_body_not_allowed");
        assert_eq!(
            s.trace("/gated/chunked")["annotations"]["rejected"],
            "chunked_body_not_allowed"
        );
        let r = s.send(chunked("/chunked-ok/obj")).await;
        sent += 1;
        let v = assert_verified(&r);
        assert_eq!(v["body_len"], 12);
        assert_eq!(v["content_sha256"], v["body_sha256"]);

        // Body over proxy.max_request_body_bytes: 413, nothing forwarded.
        let big = vec![b'x'; 10_000];
        let r = s
            .send(
                signed("PUT", &host, "/gated/big", "us-east-1", "s3", &big)
                    .body(body(&big))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 413, "body_too_large");
        let t = s.trace("/gated/big");
        assert_eq!(t["annotations"]["rejected"], "body_too_large");
        assert_eq!(t["annotations"]["content_length"], 10_000);

        // No SigV4 signature at all.
        let r = s
            .send(
                http::Request::builder()
                    .uri("/gated/plain")
                    .header("host", &host)
                    .header("authorization", "Bearer not-sigv4")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 400, "missing_sigv4");
        assert!(
            s.trace("/gated/plain")["annotations"]["error"]
                .as_str()
                .unwrap()
                .contains("AWS4-HMAC-SHA256")
        );

        // A header value that is not text cannot be canonicalised: the signer refuses.
        let r = s
            .send(
                signed("GET", &host, "/gated/latin1", "us-east-1", "s3", b"")
                    .header(
                        "x-amz-meta-name",
                        http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
                    )
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 500, "signing_failed");
        assert!(
            s.trace("/gated/latin1")["annotations"]["error"]
                .as_str()
                .unwrap()
                .contains("x-amz-meta-name")
        );

        // Region and service gates.
        let r = s
            .send(
                signed("GET", &host, "/gated/r", "ap-south-1", "s3", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 403, "region_not_allowed");
        let t = s.trace("/gated/r");
        assert_eq!(t["action"], "reject");
        assert_eq!(t["annotations"]["region"], "ap-south-1");
        let r = s
            .send(
                signed("GET", &host, "/gated/s", "us-east-1", "iam", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 403, "service_not_allowed");
        assert_eq!(s.trace("/gated/s")["annotations"]["service"], "iam");

        // A failing credential source: 502. A gated scope is refused before the source is
        // asked, so the same entry answers 403 for a region outside the allowlist.
        let r = s
            .send(
                signed("GET", &host, "/broken/a", "us-east-1", "s3", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 502, "credential_unavailable");
        let t = s.trace("/broken/a");
        assert_eq!(t["annotations"]["credential"], "static");
        assert!(
            t["annotations"]["error"]
                .as_str()
                .unwrap()
                .contains("access_key_id"),
            "{t}"
        );
        let r = s
            .send(
                signed("GET", &host, "/broken/b", "eu-west-1", "s3", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        sent += 1;
        assert_refused(&r, 403, "region_not_allowed");

        // The client hangs up mid-body: body_read_failed, still exactly one audit record.
        let status = s.send_partial(&host, "/gated/partial").await;
        sent += 1;
        assert!(status.is_none() || status == Some(400), "{status:?}");
        let t = s.trace("/gated/partial");
        assert_eq!(t["annotations"]["rejected"], "body_read_failed", "{t}");

        // Exactly one audit record per request.
        let audits = s.agent.wait_audits(sent);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(s.agent.audits().len(), sent, "{audits:?}");
        s.assert_no_credentials_in_logs();
    });
}

fn workload_identity() -> Vec<Transform> {
    vec![Transform::new(
        "aws_auth",
        json!({
            "credentials_provider": {"type": "workload_identity", "region": "us-east-1"},
            "allowed_services": ["bedrock"],
            "rules": [{"host": "localhost"}],
        }),
    )]
}

/// The SDK chain without any real source: env vars only, no profile files, no IMDS.
fn chain_env(dir: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", format!("{dir}/no-config")),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            format!("{dir}/no-credentials"),
        ),
    ]
}

#[test]
fn workload_identity_uses_the_sdk_chain() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut env = chain_env(&tmp.path().to_string_lossy());
        env.push(("AWS_ACCESS_KEY_ID", REAL_AK.into()));
        env.push(("AWS_SECRET_ACCESS_KEY", REAL_SK.into()));
        env.push(("AWS_SESSION_TOKEN", REAL_TOKEN.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = setup(workload_identity(), &env);
        let host = s.host();
        for i in 0..2 {
            let path = format!("/model/m{i}/invoke");
            let r = s
                .send(
                    signed("POST", &host, &path, "us-west-2", "bedrock", b"{}")
                        .body(body(b"{}"))
                        .unwrap(),
                )
                .await;
            let v = assert_verified(&r);
            assert_eq!(v["session_token"], true);
            assert_eq!(
                v["region"], "us-west-2",
                "the scope's region, not the provider's"
            );
        }
        let r = s
            .send(
                signed("GET", &host, "/s3", "us-east-1", "s3", b"")
                    .body(body(b""))
                    .unwrap(),
            )
            .await;
        assert_refused(&r, 403, "service_not_allowed");
        s.agent.wait_audits(3);
        s.assert_no_credentials_in_logs();
    });
}

#[test]
fn workload_identity_without_credentials_fails_closed() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let env = chain_env(&tmp.path().to_string_lossy());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = setup(workload_identity(), &env);
        let r = s
            .send(
                signed(
                    "POST",
                    &s.host(),
                    "/model/x/invoke",
                    "us-east-1",
                    "bedrock",
                    b"{}",
                )
                .body(body(b"{}"))
                .unwrap(),
            )
            .await;
        assert_refused(&r, 502, "credential_unavailable");
        let t = s.trace("/model/x/invoke");
        assert_eq!(t["annotations"]["credential"], "workload_identity");
        assert_eq!(s.agent.wait_audits(1).len(), 1);
    });
}

/// `YYYYMMDDTHHMMSSZ` for now (UTC), without a date crate.
fn amz_date_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The verifier is not a rubber stamp: sent to it directly, a request with the real key, the
/// current date and a wrong signature is refused, and so is the workload's placeholder request.
#[test]
fn verifier_refuses_bad_signatures() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("aws-origin");
        let up = start_upstream(dir.path(), &ca);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", up.port).parse().unwrap();
        let host = format!("localhost:{}", up.port);
        let now = amz_date_now();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={REAL_AK}/{}/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
            &now[..8],
            "0".repeat(64)
        );
        let forged = http::Request::builder()
            .uri("/bucket/key")
            .header("host", &host)
            .header("authorization", auth)
            .header("x-amz-date", &now)
            .header(
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .body(body(b""))
            .unwrap();
        let r = https_request(addr, "localhost", ca.client_config(), forged)
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("signature mismatch"), "{}", r.text());

        let placeholder = signed("GET", &host, "/bucket/key", "us-east-1", "s3", b"")
            .body(body(b""))
            .unwrap();
        let r = https_request(addr, "localhost", ca.client_config(), placeholder)
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{}", r.text());
    });
}

fn sdk_client() -> Vec<Transform> {
    vec![
        Transform::allowlist(&["localhost"]),
        Transform::new(
            "aws_auth",
            json!({
                "access_key_id": {"type": "env", "var": "REAL_AK"},
                "secret_access_key": {"type": "env", "var": "REAL_SK"},
                "session_token": {"type": "env", "var": "REAL_TOKEN"},
                "allowed_regions": ["us-east-1", "eu-west-1"],
                "rules": [{"host": "localhost"}],
            }),
        ),
    ]
}

/// The real AWS SDK as the workload: boto3 signs with the documented example credentials and
/// uses the agent's tunnel listener as its HTTPS proxy; the agent re-signs inside the tunnel.
#[test]
fn boto3_through_the_tunnel() {
    let s = setup(
        sdk_client(),
        &[
            ("REAL_AK", REAL_AK),
            ("REAL_SK", REAL_SK),
            ("REAL_TOKEN", REAL_TOKEN),
        ],
    );
    let script = iron_agent_tests::helper("aws_sdk_client.py");
    let nowhere = s.dir.path().join("no-aws-config");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("https://{}", s.host()))
        .arg(format!("http://{}", s.agent.addr("tunnel")))
        .arg(s.dir.path().join("ca.crt"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("python3 with boto3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 3, "{stdout}");

    let invoke = &calls[0]["body"];
    assert_eq!(calls[0]["status"], 200, "{stdout}");
    assert_eq!(invoke["ok"], true);
    assert_eq!(invoke["service"], "bedrock");
    assert_eq!(invoke["path"], "/model/anthropic.claude-v2%3A1/invoke");
    assert_eq!(invoke["session_token"], true);
    assert_eq!(invoke["content_sha256"], invoke["body_sha256"]);

    let get = &calls[1]["body"];
    assert_eq!(calls[1]["status"], 200, "{stdout}");
    assert_eq!(get["ok"], true);
    assert_eq!(get["service"], "s3");
    assert_eq!(get["region"], "eu-west-1");

    assert_eq!(calls[2]["status"], 403, "{stdout}");
    let denied = s.trace("/bucket/k");
    assert_eq!(denied["annotations"]["rejected"], "region_not_allowed");
    let inner = s.agent.audit_where(|r| r["path"] == "/bucket/k");
    assert_eq!(inner["tunnel"]["protocol"], "connect", "{inner}");
    s.assert_no_credentials_in_logs();
}
