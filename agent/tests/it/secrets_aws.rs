//! `aws_sm` / `aws_ssm` against moto's server mode on 127.0.0.1.
//!
//! Needs Python with `moto[server]`; the harness installs it with pip when it is missing and
//! fails (never skips) when it cannot. Resolvers are pointed at moto through
//! `AwsOverrides`, except the ttl test, which runs in a child process whose environment
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, keys) exercises the production, env-configured path.

// Helpers outside #[test] functions are not covered by clippy.toml's allow-*-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::primitives::Blob;
use iron_agent::config::transforms::source::{AwsSmSource, AwsSsmSource};
use iron_agent::config::{GoDuration, SecretSource};
use iron_agent::secrets::aws::{self, AwsOverrides};
use iron_agent::secrets::{Secret, SecretError, SecretRegistry};
use iron_agent_tests::moto::Moto;
use tokio_util::sync::CancellationToken;

const REGION: &str = "us-east-1";

// ---------------------------------------------------------------------------------------------
// moto

/// The AWS SDK pointed at the shared moto fixture.
trait MotoClients {
    fn overrides(&self) -> AwsOverrides;
    async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig;
    async fn sm(&self) -> aws_sdk_secretsmanager::Client;
    async fn ssm(&self, region: &str) -> aws_sdk_ssm::Client;
}

impl MotoClients for Moto {
    fn overrides(&self) -> AwsOverrides {
        AwsOverrides {
            endpoint_url: Some(self.url()),
            region: Some(REGION.into()),
            static_credentials: Some(("testing".into(), "testing".into())),
        }
    }

    async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.url())
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }

    async fn sm(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config(REGION).await)
    }

    async fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk_config(region).await)
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

fn sm_source(id: &str) -> AwsSmSource {
    AwsSmSource {
        secret_id: id.into(),
        ..Default::default()
    }
}

/// Neither rendering of the error may contain any of `secrets`.
fn assert_no_leak(e: &SecretError, secrets: &[&str]) {
    let shown = format!("{e} {e:?}");
    for s in secrets {
        assert!(!shown.contains(s), "error leaks a secret: {shown}");
    }
}

async fn create_secret(sm: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    sm.create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create_secret");
}

// ---------------------------------------------------------------------------------------------
// aws_sm

#[tokio::test]
async fn sm_string_secret() {
    let moto = Moto::start();
    let sm = moto.sm().await;
    create_secret(&sm, "app/token", "sm-value-1").await;

    let r = aws::secrets_manager_with(&sm_source("app/token"), moto.overrides()).unwrap();
    assert_eq!(r.fetch().await.unwrap().expose(), "sm-value-1");
    // The client is built once and reused.
    assert_eq!(r.fetch().await.unwrap().expose(), "sm-value-1");

    // Through the cache, as the transforms use it.
    let src = SecretSource::AwsSm(sm_source("app/token"));
    let secret = Secret::with_resolver(&src, r, Default::default());
    secret.refresh().await.unwrap();
    assert_eq!(secret.current().unwrap().expose(), "sm-value-1");
    assert_eq!(secret.display_name(), "app/token");
    assert_eq!(secret.kind(), "aws_sm");
}

#[tokio::test]
async fn sm_json_key_extraction() {
    let moto = Moto::start();
    let sm = moto.sm().await;
    let raw = r#"{"api_key":"jk-secret-42","other":"other-secret-9","n":7}"#;
    create_secret(&sm, "app/json", raw).await;

    let mut cfg = sm_source("app/json");
    cfg.json_key = Some("api_key".into());
    let r = aws::secrets_manager_with(&cfg, moto.overrides()).unwrap();
    let secret = Secret::with_resolver(&SecretSource::AwsSm(cfg.clone()), r, Default::default());
    secret.refresh().await.unwrap();
    assert_eq!(secret.current().unwrap().expose(), "jk-secret-42");

    for (key, want) in [("missing", "not found"), ("n", "not a string")] {
        cfg.json_key = Some(key.into());
        let r = aws::secrets_manager_with(&cfg, moto.overrides()).unwrap();
        let secret =
            Secret::with_resolver(&SecretSource::AwsSm(cfg.clone()), r, Default::default());
        let e = secret.refresh().await.unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert_no_leak(&e, &["jk-secret-42", "other-secret-9"]);
    }
}

#[tokio::test]
async fn sm_missing_binary_and_empty_secrets_are_errors() {
    let moto = Moto::start();
    let sm = moto.sm().await;
    create_secret(&sm, "present", "present-secret-3").await;
    sm.create_secret()
        .name("binary")
        .secret_binary(Blob::new(b"binary-secret-5".to_vec()))
        .send()
        .await
        .unwrap();

    let r = aws::secrets_manager_with(&sm_source("nope/missing"), moto.overrides()).unwrap();
    let e = r.fetch().await.unwrap_err();
    match &e {
        SecretError::Remote {
            source_name,
            reason,
        } => {
            assert_eq!(source_name, "nope/missing");
            assert!(reason.contains("ResourceNotFoundException"), "{reason}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_no_leak(&e, &["present-secret-3", "testing"]);

    let r = aws::secrets_manager_with(&sm_source("binary"), moto.overrides()).unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(
        e.to_string().contains("binary secrets are not supported"),
        "{e}"
    );
    assert_no_leak(&e, &["binary-secret-5", "YmluYXJ5LXNlY3JldC01"]);

    // No endpoint reachable: a transport error, still naming the secret.
    let mut dead = moto.overrides();
    dead.endpoint_url = Some("http://127.0.0.1:1".into());
    let r = aws::secrets_manager_with(&sm_source("present"), dead).unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(e.to_string().starts_with("present: "), "{e}");
    assert_no_leak(&e, &["present-secret-3"]);
}

// ---------------------------------------------------------------------------------------------
// aws_ssm

#[tokio::test]
async fn ssm_secure_string_with_decryption() {
    let moto = Moto::start();
    // The parameter lives in us-west-2 while the client default is us-east-1: the source's
    // `region` must win.
    let ssm = moto.ssm("us-west-2").await;
    ssm.put_parameter()
        .name("/app/db-password")
        .value("ssm-secret-7")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let src = AwsSsmSource {
        name: "/app/db-password".into(),
        region: Some("us-west-2".into()),
        ..Default::default()
    };
    assert!(src.with_decryption, "with_decryption defaults to true");
    let r = aws::parameter_store_with(&src, moto.overrides()).unwrap();
    assert_eq!(r.fetch().await.unwrap().expose(), "ssm-secret-7");

    let raw = AwsSsmSource {
        with_decryption: false,
        ..src.clone()
    };
    let r = aws::parameter_store_with(&raw, moto.overrides()).unwrap();
    assert_ne!(r.fetch().await.unwrap().expose(), "ssm-secret-7");

    // Wrong region: not found there.
    let elsewhere = AwsSsmSource {
        region: None,
        ..src.clone()
    };
    let r = aws::parameter_store_with(&elsewhere, moto.overrides()).unwrap();
    let e = r.fetch().await.unwrap_err();
    assert!(e.to_string().contains("ParameterNotFound"), "{e}");
    assert!(e.to_string().starts_with("/app/db-password: "), "{e}");
    assert_no_leak(&e, &["ssm-secret-7"]);
}

// ---------------------------------------------------------------------------------------------
// ttl refresh through the env-configured production path (child process)

const CHILD_ENV: &str = "IRON_AGENT_AWS_TEST_CHILD";

#[test]
fn sm_ttl_refresh_picks_up_rotation_env_configured() {
    let moto = Moto::start();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &iron_agent_tests::test_name(module_path!(), "child_env_configured_ttl_refresh"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials",
        )
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}

/// Runs only as the child of the test above; a no-op otherwise.
#[tokio::test]
async fn child_env_configured_ttl_refresh() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let setup = aws_sdk_secretsmanager::Client::new(
        &aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .load()
            .await,
    );
    create_secret(&setup, "rotating", "rotated-v1").await;

    let src = SecretSource::AwsSm(AwsSmSource {
        secret_id: "rotating".into(),
        ttl: Some(GoDuration(Duration::from_secs(1))),
        ..Default::default()
    });
    // The production constructor: region, credentials and endpoint from the environment.
    let mut reg = SecretRegistry::default();
    let secret = reg.register(&src).unwrap();
    reg.resolve_all().await;
    assert_eq!(secret.current().unwrap().expose(), "rotated-v1");

    setup
        .put_secret_value()
        .secret_id("rotating")
        .secret_string("rotated-v2")
        .send()
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    reg.spawn_refreshers(shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if secret.current().unwrap().expose() == "rotated-v2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refresh did not pick up the new version"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
}
