//! Bad input: malformed bodies, wrong types, oversized fields and bodies, unknown keys, wrong
//! content types; nothing is half-written.

use serde_json::json;

use crate::support::{api, server};

#[test]
fn malformed_requests_get_documented_errors() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let p = "/api/v1/static_secrets";
        // Malformed JSON, missing data, data of the wrong type: 400 with the error shape.
        let r = api.raw("POST", p, Some("{not json".into()), &[]).await;
        r.expect(400);
        assert_eq!(r.code(), "bad_request");
        assert!(r.json["error"]["message"].as_str().unwrap().contains("malformed JSON"));
        let r = api.post(p, json!({"name": "x"})).await;
        r.expect(400);
        assert!(r.json["error"]["message"].as_str().unwrap().contains("data"));
        api.post(p, json!({"data": [1]})).await.expect(400);
        api.raw("POST", p, None, &[]).await.expect(400);
        // Wrong content type: 415.
        let r = api
            .raw("POST", p, Some("{}".into()), &[("content-type", "text/plain")])
            .await;
        r.expect(415);
        assert_eq!(r.code(), "unsupported_media_type");
        // Wrong types and unknown keys, at every depth, all reported at once.
        let r = api
            .post(
                p,
                json!({"data": {
                    "name": 5, "colour": "red",
                    "inject_config": {"header": ["x"], "extra": true},
                    "source": {"source_type": "env", "config": {"var": 1}},
                    "rules": [{"host": "a", "http_methods": "GET"}, "x"]
                }}),
            )
            .await;
        r.expect(422);
        assert_eq!(r.code(), "validation_error");
        for f in [
            "name",
            "colour",
            "inject_config.header",
            "inject_config.extra",
            "source.config.var",
            "rules[0].http_methods",
            "rules[1]",
        ] {
            assert!(r.json["error"]["details"].get(f).is_some(), "{f} not named: {}", r.text);
            assert!(r.json["error"]["message"].as_str().unwrap().contains(f));
        }
        // Oversized field and oversized body.
        let long = "x".repeat(300);
        api.post("/api/v1/principals", json!({"data": {"name": long}}))
            .await
            .expect_field_error(422, "name");
        let huge = format!("{{\"data\":{{\"name\":\"{}\"}}}}", "y".repeat(2 * 1024 * 1024));
        // The server answers before reading the whole body; closing the connection keeps the
        // pooled client from reusing a half-written one for the next request.
        let r = api
            .raw("POST", "/api/v1/principals", Some(huge), &[("connection", "close")])
            .await;
        r.expect(413);
        assert_eq!(r.code(), "payload_too_large");
        // A source secret where it is not allowed, and a missing one.
        api.post(
            p,
            json!({"data": {"inject_config": {"header": "A"},
                            "source": {"source_type": "env", "secret": "s", "config": {"var": "V"}}}}),
        )
        .await
        .expect_field_error(422, "source.secret");
        api.post(
            p,
            json!({"data": {"inject_config": {"header": "A"},
                            "source": {"source_type": "control_plane", "config": {}}}}),
        )
        .await
        .expect_field_error(422, "source.secret");
        // Sync bodies are checked too.
        let px = api.post("/api/v1/proxies", json!({"data": {"name": "p"}})).await;
        let t = px.data()["token"].as_str().unwrap().to_owned();
        let proxy = api.with_key(&t);
        proxy
            .post("/api/v1/proxy/sync", json!({"config_hash": 5}))
            .await
            .expect_field_error(422, "config_hash");
        proxy
            .raw("POST", "/api/v1/proxy/sync", Some("[".into()), &[])
            .await
            .expect(400);
        let r = api.with_key("iprx_nope").post("/api/v1/proxy/sync", json!({})).await;
        r.expect(401);
        assert_eq!(r.json["error"]["message"], "invalid or missing proxy token");
        // Unknown routes are JSON 404s.
        assert_eq!(api.get("/api/v1/nothing").await.expect(404).code(), "not_found");
        // Nothing above was written.
        let list = api.get("/api/v1/static_secrets?namespace=default").await;
        assert_eq!(list.json["meta"]["total"], 0);
        let prns = api.get("/api/v1/principals?namespace=default").await;
        assert_eq!(prns.json["meta"]["total"], 0);
    });
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        // The secret validates, but its token_broker reference does not resolve: the whole
        // write is refused and no secret row exists afterwards.
        let r = api
            .post(
                "/api/v1/static_secrets",
                json!({"data": {"foreign_id": "tb", "inject_config": {"header": "A"},
                    "source": {"source_type": "token_broker", "config": {"credential_id": "bcr_missing"}}}}),
            )
            .await;
        r.expect_field_error(422, "source.config.credential_id");
        api.get("/api/v1/static_secrets/lookup/default/tb").await.expect(404);
    });
}
