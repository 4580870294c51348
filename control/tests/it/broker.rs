//! Broker credentials against a local OAuth token endpoint: bootstrap, early refresh with
//! rotation, retry with backoff, the dead state, reseeding, and what proxies receive meanwhile.

use serde_json::{Value, json};

use crate::scenario;
use crate::support::{Api, TokenReply, TokenServer, api, eventually, server};

fn ok(at: &str, expires_in: i64, rt: Option<&str>) -> TokenReply {
    TokenReply::Ok {
        access_token: at.into(),
        expires_in,
        refresh_token: rt.map(Into::into),
    }
}

async fn cred(api: &Api, id: &str) -> Value {
    api.get(&format!("/api/v1/broker_credentials/{id}"))
        .await
        .expect(200)
        .data()
        .clone()
}

async fn delivered(api: &Api, token: &str) -> Option<String> {
    let s = api.sync(token, None).await;
    s.expect(200);
    s.json["secrets"][0]["source"]["value"]
        .as_str()
        .map(str::to_owned)
}

/// Sets up a credential (no seed yet) referenced by a granted static secret; returns
/// (credential id, proxy token).
pub async fn setup(api: &Api, endpoint: &str) -> (String, String) {
    let c = api
        .post(
            "/api/v1/broker_credentials",
            json!({"data": {
                "namespace": "acme", "foreign_id": "gmail", "name": "Gmail",
                "token_endpoint": endpoint,
                "scopes": ["mail.read", "mail.send"],
                "client_id": "client-1",
                "client_secret": "client-secret-xyz",
                "token_endpoint_headers": {"X-Tenant": "tenant-secret-hdr"},
                "early_refresh_slack_seconds": 2,
                "early_refresh_fraction": 0.0,
            }}),
        )
        .await;
    c.expect(201);
    assert_eq!(c.data()["status"], "bootstrapping");
    assert_eq!(c.data()["next_attempt_at"], Value::Null);
    assert_eq!(c.data()["token_endpoint_header_names"], json!(["X-Tenant"]));
    assert!(!c.text.contains("client-secret-xyz") && !c.text.contains("tenant-secret-hdr"));
    let ss = api
        .post(
            "/api/v1/static_secrets",
            json!({"data": {
                "foreign_id": "gmail-auth",
                "inject_config": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
                "source": {"source_type": "token_broker",
                           "config": {"credential_id": "gmail", "credential_namespace": "acme"}},
                "rules": [{"host": "gmail.googleapis.com"}]
            }}),
        )
        .await;
    ss.expect(201);
    assert_eq!(
        ss.data()["source"]["config"],
        json!({"credential_id": "gmail", "credential_namespace": "acme"})
    );
    let prn = scenario::principal(api, "default", "mailer").await;
    scenario::grant(api, ("principal_id", &prn), "static_secret_id", &ss.id()).await;
    let (_, token) = scenario::proxy(api, Some(&prn)).await;
    (c.id(), token)
}

#[test]
fn refresh_loop_lifecycle() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let ts = TokenServer::start(vec![
            ok("access-one", 4, Some("refresh-two")),
            ok("access-two", 3600, None),
        ])
        .await;
        let (id, token) = setup(&api, &ts.url).await;
        // Bootstrapping: no seed, nothing minted, the secret is omitted.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(ts.count(), 0);
        assert_eq!(delivered(&api, &token).await, None);
        let empty_hash = api.sync(&token, None).await.json["config_hash"].clone();

        // Seeding schedules an immediate refresh.
        api.patch(
            &format!("/api/v1/broker_credentials/{id}"),
            json!({"data": {"refresh_token": "refresh-one"}}),
        )
        .await
        .expect(200);
        let v = eventually(10, || async { delivered(&api, &token).await }).await;
        assert_eq!(v, "access-one");
        let form = ts.form(0);
        let get = |k: &str| form.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        assert_eq!(get("grant_type").as_deref(), Some("refresh_token"));
        assert_eq!(get("refresh_token").as_deref(), Some("refresh-one"));
        assert_eq!(get("client_id").as_deref(), Some("client-1"));
        assert_eq!(get("client_secret").as_deref(), Some("client-secret-xyz"));
        assert_eq!(get("scope").as_deref(), Some("mail.read mail.send"));
        let hdrs = ts.requests.lock().unwrap()[0].1.clone();
        assert!(
            hdrs.iter()
                .any(|(k, v)| k == "x-tenant" && v == "tenant-secret-hdr")
        );
        let live = cred(&api, &id).await;
        assert_eq!(live["status"], "live");
        assert!(live["last_refresh"].is_string() && live["expires_at"].is_string());
        let live_text = live.to_string();
        for secret in [
            "access-one",
            "refresh-one",
            "refresh-two",
            "client-secret-xyz",
        ] {
            assert!(!live_text.contains(secret), "{secret} returned by the API");
        }
        let h1 = api.sync(&token, None).await.json["config_hash"].clone();
        assert_ne!(h1, empty_hash);

        // 4 s token, 2 s slack: refreshed early, with the rotated refresh token.
        let v = eventually(10, || async {
            delivered(&api, &token).await.filter(|v| v == "access-two")
        })
        .await;
        assert_eq!(v, "access-two");
        assert_eq!(ts.count(), 2);
        let f2 = ts.form(1);
        assert!(f2.contains(&("refresh_token".into(), "refresh-two".into())));
        assert_ne!(api.sync(&token, None).await.json["config_hash"], h1);

        // Retryable failures: counted, backed off, the live token still delivered.
        ts.set_script(vec![TokenReply::Status(
            503,
            json!({"error": "temporarily_unavailable"}),
        )]);
        api.patch(
            &format!("/api/v1/broker_credentials/{id}"),
            json!({"data": {"refresh_token": "refresh-three"}}),
        )
        .await
        .expect(200);
        let failing = eventually(15, || async {
            let c = cred(&api, &id).await;
            (c["failure_count"].as_i64() >= Some(2)).then_some(c)
        })
        .await;
        assert_eq!(failing["status"], "live");
        assert_eq!(failing["dead"], false);
        assert_eq!(delivered(&api, &token).await.as_deref(), Some("access-two"));
        // Backoff: the second retry waited longer than the first (1 s, then 2 s).
        let before = ts.count();
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
        assert!(ts.count() <= before + 1, "retries are not backed off");

        // invalid_grant: dead, the secret is withheld.
        ts.set_script(vec![TokenReply::Status(
            400,
            json!({"error": "invalid_grant"}),
        )]);
        let dead = eventually(15, || async {
            let c = cred(&api, &id).await;
            (c["status"] == "dead").then_some(c)
        })
        .await;
        assert_eq!(dead["dead"], true);
        assert_eq!(dead["dead_reason"], "invalid_grant");
        assert_eq!(dead["next_attempt_at"], Value::Null);
        assert_eq!(delivered(&api, &token).await, None);
        let n = ts.count();
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(ts.count(), n, "a dead credential is not retried");

        // A fresh refresh_token clears the dead state.
        ts.set_script(vec![ok("access-four", 3600, None)]);
        api.put(
            "/api/v1/broker_credentials/gmail",
            json!({"data": {"namespace": "acme", "refresh_token": "refresh-four"}}),
        )
        .await
        .expect(200);
        let v = eventually(10, || async {
            delivered(&api, &token).await.filter(|v| v == "access-four")
        })
        .await;
        assert_eq!(v, "access-four");
        let c = cred(&api, &id).await;
        assert_eq!(
            (c["dead"].clone(), c["failure_count"].clone()),
            (json!(false), json!(0))
        );
        // Omitted fields are preserved on update: the client secret is still sent.
        let last = ts.form(ts.count() - 1);
        assert!(last.contains(&("client_secret".into(), "client-secret-xyz".into())));

        // Referenced: 409; once unreferenced, deleted.
        let del = api
            .delete(&format!("/api/v1/broker_credentials/{id}"))
            .await;
        del.expect(409);
        let ss = api
            .get("/api/v1/static_secrets/lookup/default/gmail-auth")
            .await
            .id();
        api.delete(&format!("/api/v1/static_secrets/{ss}"))
            .await
            .expect(204);
        api.delete(&format!("/api/v1/broker_credentials/{id}"))
            .await
            .expect(204);
        // No credential value in the logs.
        let logs = s.logs();
        for secret in [
            "access-",
            "refresh-one",
            "client-secret-xyz",
            "tenant-secret-hdr",
        ] {
            assert!(!logs.contains(secret), "{secret} logged");
        }
    });
}

#[test]
fn broker_validation() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let p = "/api/v1/broker_credentials";
        api.post(p, json!({"data": {"client_id": "c"}}))
            .await
            .expect_field_error(422, "token_endpoint");
        api.post(p, json!({"data": {"token_endpoint": "ftp://x", "client_id": "c"}}))
            .await
            .expect_field_error(422, "token_endpoint");
        api.post(p, json!({"data": {"token_endpoint": "https://x/t", "client_id": "c", "early_refresh_fraction": 1.0}}))
            .await
            .expect_field_error(422, "early_refresh_fraction");
        api.post(p, json!({"data": {"token_endpoint": "https://x/t", "client_id": "c", "status": "live"}}))
            .await
            .expect(201);
        let c = api.post(p, json!({"data": {"token_endpoint": "https://x/t", "client_id": "c"}})).await;
        assert_eq!(c.expect(201).data()["early_refresh_slack_seconds"], 300);
        assert_eq!(c.data()["max_refresh_interval_seconds"], 86400);
        assert_eq!(c.data()["refresh_timeout_seconds"], 30);
        assert_eq!(c.data()["early_refresh_fraction"], 0.2);
        // token_broker references: opaque id without namespace, foreign id with one.
        let mk = |cfg: Value| {
            json!({"data": {"inject_config": {"header": "A"},
                             "source": {"source_type": "token_broker", "config": cfg}}})
        };
        api.post("/api/v1/static_secrets", mk(json!({"credential_id": c.id()})))
            .await
            .expect(201);
        api.post("/api/v1/static_secrets", mk(json!({"credential_id": c.id(), "credential_namespace": "default"})))
            .await
            .expect_field_error(422, "source.config.credential_namespace");
        api.post("/api/v1/static_secrets", mk(json!({"credential_id": "nope", "credential_namespace": "default"})))
            .await
            .expect_field_error(422, "source.config.credential_id");
    });
}
