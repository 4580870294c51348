//! Remote secret stores through the running agent: `aws_sm` and `aws_ssm` against moto (a local
//! AWS endpoint speaking the real protocol), and `1password_connect` against a local server
//! speaking the Connect REST API. The upstream must see the real values; the logs must not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use iron_agent_tests::client::get_with as req;
use iron_agent_tests::moto::Moto;
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request};
use serde_json::json;

#[test]
fn aws_secrets_manager_and_parameter_store_through_the_agent() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let moto = Moto::start();
        moto.call("secretsmanager", "secretsmanager.CreateSecret", serde_json::json!({"Name": "prod/llm", "SecretString": "{\"key\":\"sm-real-value-1\"}"})).await;
        moto.call("ssm", "AmazonSSM.PutParameter", serde_json::json!({"Name": "/app/token", "Value": "ssm-real-value-2", "Type": "SecureString"})).await;
        let origin = Origin::start(OriginKind::Http, None).await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("m").write(dir.path());
        let t = vec![
            Transform::secrets(json!([
                {
                    "source": {
                        "type": "aws_sm",
                        "secret_id": "prod/llm",
                        "json_key": "key",
                        "region": "us-east-1",
                    },
                    "inject": {"header": "X-Llm-Key"},
                },
                {
                    "source": {"type": "aws_ssm", "name": "/app/token", "region": "us-east-1"},
                    "replace": {"proxy_value": "ph-ssm"},
                },
            ])),
        ];
        let agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms(t))
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .start();
        let host = format!("localhost:{}", origin.port());
        let r = http_request(agent.addr("http"), req(&host, "/aws", &[("x-token", "ph-ssm")])).await;
        assert_eq!(r.status, 200, "{}", agent.logs());
        assert_eq!(r.echoed_header("x-llm-key").as_deref(), Some("sm-real-value-1"));
        assert_eq!(r.echoed_header("x-token").as_deref(), Some("ssm-real-value-2"));
        let a = agent.audit_where(|a| a["path"] == "/aws");
        let ann = &a["request_transforms"][0]["annotations"];
        assert_eq!(ann["injected"][0]["secret"], "prod/llm");
        assert_eq!(ann["swapped"][0]["secret"], "/app/token");
        let logs = agent.logs();
        assert!(!logs.contains("sm-real-value-1") && !logs.contains("ssm-real-value-2"));
    });
}

/// A minimal 1Password Connect server: one vault, one item, bearer-token checked.
async fn fake_connect(token: &'static str) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |r: http::Request<hyper::body::Incoming>| async move {
                    let authed = r
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        == Some(&format!("Bearer {token}"));
                    let (status, body) = if !authed {
                        (
                            401,
                            serde_json::json!({"status": 401, "message": "Invalid token"}),
                        )
                    } else {
                        match r.uri().path() {
                            "/v1/vaults" => (
                                200,
                                serde_json::json!([{"id": "vlt1", "name": "Engineering"}]),
                            ),
                            "/v1/vaults/vlt1/items" => {
                                (200, serde_json::json!([{"id": "itm1", "title": "OpenAI"}]))
                            }
                            "/v1/vaults/vlt1/items/itm1" => (
                                200,
                                serde_json::json!({
                                    "id": "itm1", "title": "OpenAI",
                                    "fields": [{"id": "f1", "label": "credential", "value": "op-real-value-3"}]
                                }),
                            ),
                            _ => (
                                404,
                                serde_json::json!({"status": 404, "message": "Not found"}),
                            ),
                        }
                    };
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[test]
fn onepassword_connect_through_the_agent() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let connect = fake_connect("connect-token").await;
        let origin = Origin::start(OriginKind::Http, None).await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("m").write(dir.path());
        let t = vec![Transform::secrets(json!([
            {
                "source": {
                    "type": "1password_connect",
                    "secret_ref": "op://Engineering/OpenAI/credential",
                },
                "inject": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
            },
        ]))];
        let agent = Agent::with(&AgentConfig::loopback(&c, &k).transforms(t))
            .env("OP_CONNECT_HOST", format!("http://{connect}"))
            .env("OP_CONNECT_TOKEN", "connect-token")
            .start();
        let host = format!("localhost:{}", origin.port());
        let r = http_request(agent.addr("http"), req(&host, "/op", &[])).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.echoed_header("authorization").as_deref(),
            Some("Bearer op-real-value-3")
        );
        let a = agent.audit_where(|a| a["path"] == "/op");
        assert_eq!(
            a["request_transforms"][0]["annotations"]["injected"][0]["secret"],
            "op://Engineering/OpenAI/credential"
        );
        assert!(!agent.logs().contains("op-real-value-3"));
        assert!(!agent.logs().contains("connect-token"));
    });
}
