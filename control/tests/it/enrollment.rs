//! Enrollment tokens: shown once, tags passed to proxies, expiry and max uses enforced.

use serde_json::json;

use crate::support::{api, server};

#[test]
fn enrollment_tokens_and_enroll() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let t = api
            .post(
                "/api/v1/enrollment_tokens",
                json!({"data": {"tags": ["env:prod", "ci"], "expires_in_seconds": 3600, "max_uses": 1}}),
            )
            .await;
        t.expect(201);
        let d = t.data();
        assert!(t.id().starts_with("enr_"));
        let token = d["token"].as_str().unwrap().to_owned();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(d["tags"], json!(["env:prod", "ci"]));
        assert_eq!((d["max_uses"].as_i64(), d["uses"].as_i64()), (Some(1), Some(0)));
        assert!(d["expires_at"].as_str().unwrap().ends_with('Z'));
        let list = api.get("/api/v1/enrollment_tokens").await;
        list.expect(200);
        assert!(!list.text.contains(&token), "listed with its token");
        assert_eq!(list.json["data"][0]["id"], t.id());

        // Enroll without an API key; the proxy carries the token's tags.
        let anon = api.with_key("");
        let e = anon
            .post("/api/v1/proxy/enroll", json!({"enrollment_token": token, "name": "host-1"}))
            .await;
        e.expect(201);
        assert!(e.id().starts_with("prx_"));
        let ptoken = e.data()["token"].as_str().unwrap().to_owned();
        assert!(ptoken.starts_with("iprx_") && ptoken.len() == 69);
        assert_eq!(e.data()["tags"], json!(["env:prod", "ci"]));
        let p = api.get(&format!("/api/v1/proxies/{}", e.id())).await;
        assert_eq!(p.expect(200).data()["tags"], json!(["env:prod", "ci"]));
        assert_eq!(p.data()["name"], "host-1");
        let sy = api.sync(&ptoken, None).await;
        assert_eq!(sy.expect(200).json["status"], "unassigned");
        let used = api.get("/api/v1/enrollment_tokens").await;
        assert_eq!(used.json["data"][0]["uses"], 1);

        // Max uses exceeded.
        let again = anon
            .post("/api/v1/proxy/enroll", json!({"enrollment_token": token, "name": "host-2"}))
            .await;
        assert_eq!(again.expect(401).code(), "token_exhausted");
        // Unknown token.
        let bad = anon
            .post("/api/v1/proxy/enroll", json!({"enrollment_token": "00".repeat(32)}))
            .await;
        assert_eq!(bad.expect(401).code(), "invalid_token");
        // Expired token.
        let short = api
            .post(
                "/api/v1/enrollment_tokens",
                json!({"data": {"tags": [], "expires_in_seconds": 1, "max_uses": 0}}),
            )
            .await;
        let st = short.data()["token"].as_str().unwrap().to_owned();
        anon.post("/api/v1/proxy/enroll", json!({"enrollment_token": st}))
            .await
            .expect(201);
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let exp = anon
            .post("/api/v1/proxy/enroll", json!({"enrollment_token": st}))
            .await;
        assert_eq!(exp.expect(401).code(), "token_expired");
        // Unlimited (max_uses 0) tokens keep working; concurrent redemptions of a
        // max_uses=3 token enroll exactly three proxies.
        let three = api
            .post(
                "/api/v1/enrollment_tokens",
                json!({"data": {"tags": ["pool"], "expires_in_seconds": 600, "max_uses": 3}}),
            )
            .await;
        let tt = three.data()["token"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let a = anon.clone();
            let tt = tt.clone();
            tasks.push(tokio::spawn(async move {
                a.post(
                    "/api/v1/proxy/enroll",
                    json!({"enrollment_token": tt, "name": format!("n{i}")}),
                )
                .await
                .status
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                201 => ok += 1,
                401 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(ok, 3);
        // Validation and deletion.
        api.post("/api/v1/enrollment_tokens", json!({"data": {"max_uses": -1}}))
            .await
            .expect_field_error(422, "max_uses");
        api.post("/api/v1/enrollment_tokens", json!({"data": {"tags": ["has space"]}}))
            .await
            .expect_field_error(422, "tags[0]");
        api.post("/api/v1/enrollment_tokens", json!({"data": {"expires_in_seconds": "1h"}}))
            .await
            .expect_field_error(422, "expires_in_seconds");
        anon.post("/api/v1/proxy/enroll", json!({"name": "x"}))
            .await
            .expect_field_error(422, "enrollment_token");
        anon.get("/api/v1/enrollment_tokens").await.expect(401);
        api.delete(&format!("/api/v1/enrollment_tokens/{}", three.id()))
            .await
            .expect(204);
        let gone = anon
            .post("/api/v1/proxy/enroll", json!({"enrollment_token": tt}))
            .await;
        assert_eq!(gone.expect(401).code(), "invalid_token");
        api.delete(&format!("/api/v1/enrollment_tokens/{}", three.id()))
            .await
            .expect(404);
    });
}
