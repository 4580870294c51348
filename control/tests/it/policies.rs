//! The /v1/policies API and tag matching: a proxy receives the active policies whose match
//! tags are all among its tags, by priority.

use serde_json::{Value, json};

use crate::support::{api, server};

fn hosts(v: &Value) -> Vec<String> {
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn policies_crud_and_tag_matching() {
    let s = server().start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = api(&s);
        let n = "/v1/policies/network";
        let base = api
            .post(n, json!({"name": "baseline", "priority": 20, "rules": [{"host": "registry.npmjs.org"}]}))
            .await;
        base.expect(201);
        assert!(base.id().starts_with("npol_"));
        assert_eq!(base.data()["active"], true);
        assert_eq!(base.data()["match_tags"], json!([]));
        assert_eq!(base.data()["version"], 1);
        let prod = api
            .post(
                n,
                json!({"name": "prod-api", "priority": 5, "match_tags": ["env:prod", "api"],
                       "rules": [{"host": "api.example.com", "paths": ["/v1/*"], "methods": ["GET", "POST"]}]}),
            )
            .await;
        prod.expect(201);
        api.post(n, json!({"name": "draft", "priority": 1, "active": false, "rules": [{"host": "draft.example"}]}))
            .await
            .expect(201);
        // Listed by priority; name/active filters.
        let l = api.get(n).await;
        let names: Vec<&str> = l.json["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["draft", "prod-api", "baseline"]);
        let act = api.get(&format!("{n}?active=false")).await;
        assert_eq!(act.json["data"].as_array().unwrap().len(), 1);
        let by = api.get(&format!("{n}?name=baseline")).await;
        assert_eq!(by.json["data"][0]["id"], base.id());
        // Documented errors.
        let dup = api.post(n, json!({"name": "baseline", "priority": 1})).await;
        assert_eq!(dup.expect(409).code(), "network_policy_name_taken");
        let bad = api.post(n, json!({"name": "Bad Name", "rules": [{"paths": ["/x"]}]})).await;
        bad.expect(422);
        assert_eq!(bad.code(), "validation_error");
        for f in ["name", "priority", "rules[0].host"] {
            assert!(bad.json["error"]["message"].as_str().unwrap().contains(f), "{}", bad.text);
        }
        let ct = api
            .raw("POST", n, Some("{}".into()), &[("content-type", "application/x-www-form-urlencoded")])
            .await;
        assert_eq!(ct.expect(415).code(), "unsupported_media_type");
        assert_eq!(
            ct.json["error"]["message"],
            "Content-Type must be application/json"
        );
        let nf = api.get(&format!("{n}/npol_missing")).await;
        assert_eq!(nf.expect(404).code(), "network_policy_not_found");
        assert_eq!(api.with_key("").get(n).await.expect(401).code(), "unauthorized");
        // Server-owned fields are ignored; unknown ones are not.
        api.post(n, json!({"name": "owned", "priority": 3, "id": "npol_mine", "created_at": "x"}))
            .await
            .expect(201);
        api.post(n, json!({"name": "unknown", "priority": 3, "colour": 1}))
            .await
            .expect(422);

        let sp = api
            .post(
                "/v1/policies/secrets",
                json!({"name": "openai-key", "priority": 0, "mode": "inject", "match_tags": ["env:prod"],
                       "rules": [{"host": "api.openai.com", "paths": ["/v1/*"], "methods": ["POST"]}],
                       "source": {"type": "env", "var": "OPENAI_API_KEY"},
                       "inject_config": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
                       "replace_config": {"proxy_value": "ignored"}}),
            )
            .await;
        sp.expect(201);
        assert!(sp.id().starts_with("spol_"));
        assert!(sp.data().get("replace_config").is_none(), "other mode's config cleared");
        api.post("/v1/policies/secrets", json!({"name": "bad-src", "priority": 0, "mode": "replace",
                "source": {"type": "vault"}, "replace_config": {"proxy_value": "a/b"}}))
            .await
            .expect(422);
        let mp = api
            .post(
                "/v1/policies/mcp",
                json!({"name": "github-mcp", "priority": 0, "match_tags": ["api"],
                       "rules": [{"host": "mcp.github.com", "paths": ["/mcp"], "methods": ["POST"]}],
                       "tools": [{"name": "search_repositories", "matchers": []},
                                 {"name": "create_issue", "matchers": [{"path": "owner", "equals": "ironsh"}]}]}),
            )
            .await;
        mp.expect(201);
        assert!(mp.id().starts_with("mpol_"));
        let two = api
            .post("/v1/policies/mcp", json!({"name": "x", "priority": 1,
                "tools": [{"name": "t", "matchers": [{"path": "a", "equals": 1, "in": [1]}]}]}))
            .await;
        assert_eq!(two.expect(422).code(), "validation_error");
        api.post("/v1/policies/mcp", json!({"name": "y", "priority": 1,
                "tools": [{"name": "t", "matchers": [{"path": "a", "matches": "("}]}]}))
            .await
            .expect(422);

        // Tag matching.
        let mk = |tags: Value| {
            let api = api.clone();
            async move {
                let r = api.post("/api/v1/proxies", json!({"data": {"name": "p", "tags": tags}})).await;
                r.expect(201);
                r.data()["token"].as_str().unwrap().to_owned()
            }
        };
        let t_none = mk(json!([])).await;
        let t_prod = mk(json!(["env:prod"])).await;
        let t_both = mk(json!(["env:prod", "api", "extra"])).await;
        let none = api.sync(&t_none, None).await;
        assert_eq!(hosts(&none.json), ["registry.npmjs.org"]);
        assert_eq!(none.json["secrets"], json!([]));
        assert_eq!(none.json["mcp"], json!({"servers": []}));
        let p = api.sync(&t_prod, None).await;
        assert_eq!(hosts(&p.json), ["registry.npmjs.org"]);
        assert_eq!(
            p.json["secrets"],
            json!([{"source": {"type": "env", "var": "OPENAI_API_KEY"},
                    "inject": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
                    "rules": [{"host": "api.openai.com", "methods": ["POST"], "paths": ["/v1/*"]}]}])
        );
        let b = api.sync(&t_both, None).await;
        assert_eq!(hosts(&b.json), ["api.example.com", "registry.npmjs.org"], "by priority");
        assert_eq!(b.json["rules"][0], json!({"host": "api.example.com", "methods": ["GET", "POST"], "paths": ["/v1/*"]}));
        assert_eq!(
            b.json["mcp"]["servers"][0],
            json!({"name": "github-mcp",
                   "rules": [{"host": "mcp.github.com", "methods": ["POST"], "paths": ["/mcp"]}],
                   "tools": [{"name": "search_repositories"},
                             {"name": "create_issue", "when": [{"path": "owner", "equals": "ironsh"}]}]})
        );
        // Priority changes reorder; deactivating removes; each changes the hash.
        let h = b.json["config_hash"].clone();
        let put = api
            .put(
                &format!("{n}/{}", prod.id()),
                json!({"name": "prod-api", "priority": 50, "match_tags": ["env:prod", "api"],
                       "rules": [{"host": "api.example.com"}]}),
            )
            .await;
        put.expect(200);
        let b2 = api.sync(&t_both, None).await;
        assert_eq!(hosts(&b2.json), ["registry.npmjs.org", "api.example.com"]);
        assert_ne!(b2.json["config_hash"], h);
        let patched = api.patch(&format!("{n}/{}", prod.id()), json!({"active": false})).await;
        assert_eq!(patched.expect(200).data()["priority"], 50, "PATCH keeps other fields");
        let b3 = api.sync(&t_both, None).await;
        assert_eq!(hosts(&b3.json), ["registry.npmjs.org"]);
        // Retagging a proxy changes what it gets.
        let px = api.get("/api/v1/proxies").await.json["data"][0]["id"].as_str().unwrap().to_owned();
        api.patch(&format!("/api/v1/proxies/{px}"), json!({"data": {"tags": ["env:prod"]}}))
            .await
            .expect(200);
        let r = api.sync(&t_none, None).await;
        assert_eq!(r.json["secrets"].as_array().unwrap().len(), 1);
        // Delete.
        api.delete(&format!("/v1/policies/secrets/{}", sp.id())).await.expect(204);
        let gone = api.delete(&format!("/v1/policies/secrets/{}", sp.id())).await;
        assert_eq!(gone.expect(404).code(), "secret_policy_not_found");
        let r = api.sync(&t_none, None).await;
        assert_eq!(r.json["secrets"], json!([]));
    });
}
