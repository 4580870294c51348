//! Every resource family of the /api/v1 API on SQLite: create, fetch, lookup, list,
//! upsert by OID and foreign_id, delete, and the write-only rules.

use serde_json::{Value, json};

use crate::scenario;
use crate::support::{api, server};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn core_scenario_sqlite() {
    let s = server().start();
    rt().block_on(scenario::core(&api(&s)));
}

#[test]
fn every_secret_kind_round_trips_and_syncs() {
    let s = server().start();
    rt().block_on(async {
        let api = api(&s);
        let gcp = api
            .post(
                "/api/v1/gcp_auth_secrets",
                json!({"data": {
                    "foreign_id": "sa-prod",
                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "subject": "user@example.com",
                    "keyfile": {"source_type": "aws_sm", "config": {"secret_id": "gcp-sa", "region": "us-west-2"}},
                    "rules": [{"host": "googleapis.com", "http_methods": ["*"], "paths": ["/v1/*"]}]
                }}),
            )
            .await;
        gcp.expect(201);
        assert_eq!(gcp.data()["credentials_provider"], Value::Null);
        assert_eq!(gcp.data()["keyfile"]["config"]["secret_id"], "gcp-sa");
        let wi = api
            .post(
                "/api/v1/gcp_auth_secrets",
                json!({"data": {"scopes": ["s"], "credentials_provider": {"type": "workload_identity"}, "subject": "x@y"}}),
            )
            .await;
        wi.expect_field_error(422, "subject");

        let oauth = api
            .post(
                "/api/v1/oauth_token_secrets",
                json!({"data": {
                    "foreign_id": "slack-app",
                    "grant": "refresh_token",
                    "token_endpoint": "https://slack.com/api/oauth.v2.access",
                    "scopes": ["chat:write"],
                    "header": "Authorization",
                    "value_prefix": "Bearer",
                    "credentials": {
                        "client_id": {"source_type": "aws_ssm", "config": {"name": "/slack/client_id"}},
                        "refresh_token": {"source_type": "control_plane", "secret": "xoxe-1-secret", "config": {}}
                    },
                    "token_endpoint_headers": {"X-Auth": {"source_type": "env", "config": {"var": "SLACK_AUTH"}}},
                    "rules": [{"host": "slack.com", "http_methods": ["POST"], "paths": ["/api/*"]}]
                }}),
            )
            .await;
        oauth.expect(201);
        assert!(!oauth.text.contains("xoxe-1-secret"), "write-only value echoed");
        assert_eq!(
            oauth.data()["credentials"]["refresh_token"],
            json!({"source_type": "control_plane", "config": {}})
        );
        let bad_grant = api
            .post(
                "/api/v1/oauth_token_secrets",
                json!({"data": {
                    "grant": "client_credentials", "token_endpoint": "https://x/t",
                    "credentials": {"client_id": {"source_type": "env", "config": {"var": "A"}},
                                    "username": {"source_type": "env", "config": {"var": "U"}}},
                    "rules": [{"host": "x"}]
                }}),
            )
            .await;
        bad_grant.expect_field_error(422, "credentials.client_secret");
        assert!(bad_grant.json["error"]["details"]["credentials.username"].is_array());

        let pg = api
            .post(
                "/api/v1/pg_dsn_secrets",
                json!({"data": {"foreign_id": "analytics-pg", "database": "analytics", "role": "readonly",
                                "dsn": {"source_type": "env", "config": {"var": "PG_DSN"}}}}),
            )
            .await;
        pg.expect(201);
        api.post(
            "/api/v1/pg_dsn_secrets",
            json!({"data": {"dsn": {"source_type": "env", "config": {"var": "PG_DSN"}}}}),
        )
        .await
        .expect_field_error(422, "foreign_id");

        let hmac = api
            .post(
                "/api/v1/hmac_secrets",
                json!({"data": {
                    "foreign_id": "webhook-hmac",
                    "timestamp_format": "unix_seconds",
                    "signature_algorithm": "sha256",
                    "signature_key_encoding": "hex",
                    "signature_output_encoding": "base64",
                    "signature_message": "{{ .Timestamp }}.{{ .Body }}",
                    "headers": [{"name": "X-Signature", "value": "{{ .Signature }}"}],
                    "credentials": {"secret": {"source_type": "aws_sm", "config": {"secret_id": "hk", "region": "us-west-2"}}},
                    "rules": [{"host": "hooks.example.com", "http_methods": ["POST"], "paths": ["/webhooks/*"]}]
                }}),
            )
            .await;
        hmac.expect(201);
        assert_eq!(hmac.data()["allow_chunked_body"], false);
        assert!(hmac.id().starts_with("hms_"));
        api.post(
            "/api/v1/hmac_secrets",
            json!({"data": {"timestamp_format": "unix_hours"}}),
        )
        .await
        .expect_field_error(422, "timestamp_format");

        // Grant all of them and check what a proxy receives.
        let prn = scenario::principal(&api, "default", "all").await;
        let st = scenario::cp_secret(&api, "static", "static-value", "api.example").await;
        for (field, id) in [
            ("static_secret_id", st.clone()),
            ("gcp_auth_secret_id", gcp.id()),
            ("oauth_token_secret_id", oauth.id()),
            ("pg_dsn_secret_id", pg.id()),
            ("hmac_secret_id", hmac.id()),
        ] {
            scenario::grant(&api, ("principal_id", &prn), field, &id).await;
        }
        let (_, token) = scenario::proxy(&api, Some(&prn)).await;
        let cfg = api.sync(&token, None).await;
        cfg.expect(200);
        let c = &cfg.json;
        assert_eq!(
            c["secrets"][0],
            json!({"source": {"type": "control_plane", "value": "static-value"},
                   "inject": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
                   "rules": [{"host": "api.example", "methods": ["GET"]}]})
        );
        let names: Vec<&str> = c["transforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["gcp_auth", "hmac_sign", "oauth_token"]);
        assert_eq!(
            c["transforms"][0]["config"]["keyfile"],
            json!({"type": "aws_sm", "secret_id": "gcp-sa", "region": "us-west-2"})
        );
        let tok = &c["transforms"][2]["config"]["tokens"][0];
        assert_eq!(tok["refresh_token"], json!({"type": "control_plane", "value": "xoxe-1-secret"}));
        assert_eq!(tok["client_id"], json!({"type": "aws_ssm", "name": "/slack/client_id"}));
        assert_eq!(tok["token_endpoint_headers"]["X-Auth"], json!({"type": "env", "var": "SLACK_AUTH"}));
        let hm = &c["transforms"][1]["config"];
        assert_eq!(hm["signature"]["algorithm"], "sha256");
        assert_eq!(hm["timestamp"], json!({"format": "unix_seconds"}));
        assert!(hm.get("allow_chunked_body").is_none());
        assert_eq!(
            c["postgres"][0],
            json!({"id": pg.id(), "foreign_id": "analytics-pg",
                   "dsn": {"type": "env", "var": "PG_DSN"}, "database": "analytics", "role": "readonly"})
        );

        // Effective config: the same shape, values redacted, ETag and no-store.
        let eff = api.get(&format!("/api/v1/principals/{prn}/effective_config")).await;
        eff.expect(200);
        assert!(!eff.text.contains("static-value") && !eff.text.contains("xoxe-1-secret"));
        assert_eq!(eff.data()["secrets"][0]["source"]["value"], "[redacted]");
        assert_eq!(eff.data()["transforms"], c["transforms"].as_array().map(|t| {
            let mut t = t.clone();
            t[2]["config"]["tokens"][0]["refresh_token"]["value"] = json!("[redacted]");
            Value::Array(t)
        }).unwrap());
        assert_eq!(eff.headers["cache-control"], "no-store");
        assert!(eff.headers.contains_key("etag"));
        assert!(eff.json["data"].get("config_hash").is_none());
        let by_fid = api
            .get("/api/v1/principals/lookup/default/all/effective_config")
            .await;
        assert_eq!(by_fid.expect(200).headers["etag"], eff.headers["etag"]);
        api.get("/api/v1/principals/lookup/default/nobody/effective_config")
            .await
            .expect(404);
    });
}

#[test]
fn upserts_foreign_ids_namespaces_and_lookup() {
    let s = server().start();
    rt().block_on(async {
        let api = api(&s);
        // PUT by foreign_id creates (201), then updates (200): idempotent provisioning.
        let body = json!({"data": {"namespace": "acme", "name": "Infra", "labels": {"kind": "shared"}}});
        let c = api.put("/api/v1/roles/infra", body.clone()).await;
        c.expect(201);
        assert_eq!(c.data()["foreign_id"], "infra");
        assert_eq!(c.data()["namespace"], "acme");
        let u = api
            .put("/api/v1/roles/infra", json!({"data": {"namespace": "acme", "name": "Infra 2"}}))
            .await;
        u.expect(200);
        assert_eq!(u.id(), c.id());
        assert_eq!(u.data()["name"], "Infra 2");
        assert_eq!(u.data()["labels"], json!({"kind": "shared"}), "omitted labels kept");
        // Same foreign_id in another namespace is another record.
        let other = api.put("/api/v1/roles/infra", json!({"data": {"name": "x"}})).await;
        other.expect(201);
        assert_ne!(other.id(), c.id());
        // By OID: update, 404 when unknown; namespace and foreign_id are immutable.
        api.patch(&format!("/api/v1/roles/{}", c.id()), json!({"data": {"name": "Infra 3"}}))
            .await
            .expect(200);
        api.patch("/api/v1/roles/role_000000000000000000000000", json!({"data": {"name": "x"}}))
            .await
            .expect(404);
        api.patch(&format!("/api/v1/roles/{}", c.id()), json!({"data": {"namespace": "other"}}))
            .await
            .expect_field_error(422, "namespace");
        api.patch(&format!("/api/v1/roles/{}", c.id()), json!({"data": {"foreign_id": "other"}}))
            .await
            .expect_field_error(422, "foreign_id");
        // Lookup by namespace + foreign_id.
        let l = api.get("/api/v1/roles/lookup/acme/infra").await;
        assert_eq!(l.expect(200).id(), c.id());
        api.get("/api/v1/roles/lookup/acme/nope").await.expect(404);
        // foreign_id rules: URL-safe, unique per namespace, not an OID prefix.
        api.post("/api/v1/principals", json!({"data": {"foreign_id": "a/b"}}))
            .await
            .expect_field_error(422, "foreign_id");
        api.post("/api/v1/principals", json!({"data": {"foreign_id": "prn_x"}}))
            .await
            .expect_field_error(422, "foreign_id");
        api.post("/api/v1/principals", json!({"data": {"namespace": "n s"}}))
            .await
            .expect_field_error(422, "namespace");
        api.post("/api/v1/principals", json!({"data": {"foreign_id": "dup"}}))
            .await
            .expect(201);
        api.post("/api/v1/principals", json!({"data": {"foreign_id": "dup"}}))
            .await
            .expect_field_error(422, "foreign_id");
        let d = api.post("/api/v1/principals", json!({"data": {}})).await;
        assert_eq!(d.expect(201).data()["namespace"], "default");
        assert_eq!(d.data()["labels"], json!({}));

        // Static secret upsert: rules and source replaced wholesale; source_type immutable.
        let ss = api
            .put(
                "/api/v1/static_secrets/gh",
                json!({"data": {"inject_config": {"header": "Authorization"},
                                "source": {"source_type": "env", "config": {"var": "GH"}},
                                "rules": [{"host": "a"}, {"host": "b"}]}}),
            )
            .await;
        ss.expect(201);
        assert_eq!(ss.data()["replace_config"], Value::Null, "unset attributes are null");
        let ss2 = api
            .put("/api/v1/static_secrets/gh", json!({"data": {"rules": [{"cidr": "10.0.0.0/8"}]}}))
            .await;
        ss2.expect(200);
        assert_eq!(ss2.data()["rules"], json!([{"host": null, "cidr": "10.0.0.0/8", "position": 0, "http_methods": [], "paths": []}]));
        assert_eq!(ss2.data()["source"]["config"]["var"], "GH");
        api.put(
            "/api/v1/static_secrets/gh",
            json!({"data": {"source": {"source_type": "aws_sm", "config": {"secret_id": "x"}}}}),
        )
        .await
        .expect_field_error(422, "source.source_type");
        // Switching from inject to replace needs the other cleared.
        api.put(
            "/api/v1/static_secrets/gh",
            json!({"data": {"replace_config": {"proxy_value": "__GH__"}}}),
        )
        .await
        .expect_field_error(422, "base");
        let sw = api
            .put(
                "/api/v1/static_secrets/gh",
                json!({"data": {"inject_config": null, "replace_config": {"proxy_value": "__GH__"}}}),
            )
            .await;
        sw.expect(200);
        assert_eq!(sw.data()["inject_config"], Value::Null);
    });
}

#[test]
fn lists_paginate_and_filter_by_labels() {
    let s = server().start();
    rt().block_on(async {
        let api = api(&s);
        for i in 0..7 {
            let team = if i % 2 == 0 { "a" } else { "b" };
            api.post(
                "/api/v1/principals",
                json!({"data": {"namespace": "pg", "foreign_id": format!("p{i}"),
                                "labels": {"team": team, "n": i, "on": true}}}),
            )
            .await
            .expect(201);
        }
        api.post(
            "/api/v1/principals",
            json!({"data": {"namespace": "other"}}),
        )
        .await
        .expect(201);
        let p1 = api.get("/api/v1/principals?namespace=pg&limit=3").await;
        p1.expect(200);
        assert_eq!(
            p1.json["meta"],
            json!({"page": 1, "limit": 3, "total": 7, "total_pages": 3})
        );
        let p3 = api
            .get("/api/v1/principals?namespace=pg&limit=3&page=3")
            .await;
        assert_eq!(p3.json["data"].as_array().unwrap().len(), 1);
        assert_eq!(p3.json["data"][0]["foreign_id"], "p6");
        // Clamped.
        let c = api
            .get("/api/v1/principals?namespace=pg&limit=1000&page=-4")
            .await;
        assert_eq!(c.json["meta"]["limit"], 200);
        assert_eq!(c.json["meta"]["page"], 1);
        // Non-integers and a missing namespace are 400.
        api.get("/api/v1/principals?namespace=pg&page=two")
            .await
            .expect(400);
        api.get("/api/v1/principals?namespace=pg&limit=1.5")
            .await
            .expect(400);
        api.get("/api/v1/principals").await.expect(400);
        api.get("/api/v1/principals?namespace=pg&labels[team][x]=a")
            .await
            .expect(400);
        // Labels: every pair must be present.
        let a = api
            .get("/api/v1/principals?namespace=pg&labels[team]=a")
            .await;
        assert_eq!(a.expect(200).json["meta"]["total"], 4);
        let none = api
            .get("/api/v1/principals?namespace=pg&labels[team]=a&labels[missing]=x")
            .await;
        assert_eq!(none.json["meta"]["total"], 0);
        let enc = api
            .get("/api/v1/principals?namespace=pg&labels%5Bteam%5D=b")
            .await;
        assert_eq!(enc.json["meta"]["total"], 3);
        // Label values in bodies must be scalars.
        api.post(
            "/api/v1/principals",
            json!({"data": {"labels": {"x": {"y": 1}}}}),
        )
        .await
        .expect_field_error(422, "labels.x");
    });
}

#[test]
fn api_keys_proxies_and_grants() {
    let s = server().start();
    rt().block_on(async {
        let api = api(&s);
        let k = api.post("/api/v1/api_keys", json!({"data": {"name": "CI"}})).await;
        k.expect(201);
        let token = k.data()["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("iak_") && token.len() == 68);
        api.post("/api/v1/api_keys", json!({"data": {}}))
            .await
            .expect_field_error(422, "name");
        let list = api.get("/api/v1/api_keys").await;
        assert_eq!(list.expect(200).json["meta"]["total"], 2);
        assert!(!list.text.contains("iak_"), "tokens are never listed");
        let ci = api.with_key(&token);
        ci.get("/api/v1/api_keys").await.expect(200);
        // Revoking the key in use is refused; another key can revoke it.
        let me = ci.delete(&format!("/api/v1/api_keys/{}", k.id())).await;
        me.expect(422);
        assert_eq!(me.json["error"]["message"], "cannot revoke the API key used for this request");
        api.delete(&format!("/api/v1/api_keys/{}", k.id())).await.expect(204);
        ci.get("/api/v1/api_keys").await.expect(401);
        api.get(&format!("/api/v1/api_keys/{}", k.id())).await.expect(404);
        // Wrong or missing keys.
        let bad = api.with_key("iak_0000000000000000000000000000000000000000000000000000000000000000");
        let r = bad.get("/api/v1/proxies").await;
        r.expect(401);
        assert_eq!(r.json["error"]["message"], "invalid or missing API key");
        api.with_key("").get("/api/v1/proxies").await.expect(401);

        // Proxies: unassigned, assign, swap, clear; tokens never listed.
        let p1 = scenario::principal(&api, "default", "one").await;
        let p2 = scenario::principal(&api, "default", "two").await;
        let (px, ptoken) = scenario::proxy(&api, None).await;
        let s0 = api.sync(&ptoken, None).await;
        assert_eq!(s0.json["status"], "unassigned");
        let a = api.patch(&format!("/api/v1/proxies/{px}"), json!({"data": {"principal_id": p1}})).await;
        assert_eq!(a.expect(200).data()["status"], "assigned");
        assert!(a.data()["principal_assigned_at"].is_string());
        let s1 = api.sync(&ptoken, None).await;
        assert_ne!(s1.json["config_hash"], s0.json["config_hash"]);
        api.patch(&format!("/api/v1/proxies/{px}"), json!({"data": {"principal_id": p2}}))
            .await
            .expect(200);
        let s2 = api.sync(&ptoken, None).await;
        assert_eq!(s2.json["principal_id"], p2);
        assert_ne!(s2.json["config_hash"], s1.json["config_hash"], "swap changes the hash");
        let n = api.patch(&format!("/api/v1/proxies/{px}"), json!({"data": {"name": "renamed"}})).await;
        assert_eq!(n.expect(200).data()["principal_id"], p2, "omitted principal kept");
        api.patch(&format!("/api/v1/proxies/{px}"), json!({"data": {"principal_id": "prn_missing"}}))
            .await
            .expect(404);
        let c = api.put(&format!("/api/v1/proxies/{px}"), json!({"data": {"principal_id": null}})).await;
        assert_eq!(c.expect(200).data()["status"], "unassigned");
        let s3 = api.sync(&ptoken, None).await;
        assert_eq!(s3.json["status"], "unassigned");
        api.post("/api/v1/proxies", json!({"data": {"name": "x", "principal_id": "prn_nope"}}))
            .await
            .expect(404);
        api.post("/api/v1/proxies", json!({"data": {}}))
            .await
            .expect_field_error(422, "name");
        let (_, _) = scenario::proxy(&api, Some(&p1)).await;
        let by_p = api.get(&format!("/api/v1/proxies?principal_id={p1}")).await;
        assert_eq!(by_p.expect(200).json["meta"]["total"], 1);
        assert!(!by_p.text.contains("iprx_"));
        let all = api.get("/api/v1/proxies").await;
        assert_eq!(all.json["meta"]["total"], 2);

        // Grants: validation, 404s, duplicates, fetch, delete, listing by grantee.
        let ss = scenario::cp_secret(&api, "g", "v", "h").await;
        let none = api.post("/api/v1/grants", json!({"data": {"static_secret_id": ss}})).await;
        none.expect(422);
        assert!(none.text.contains("must reference one of principal_id, role_id"));
        let nosecret = api.post("/api/v1/grants", json!({"data": {"principal_id": p1}})).await;
        nosecret.expect(422);
        assert!(nosecret.text.contains("must reference one of static_secret_id, gcp_auth_secret_id, oauth_token_secret_id, pg_dsn_secret_id, hmac_secret_id"));
        api.post("/api/v1/grants", json!({"data": {"principal_id": "prn_x", "static_secret_id": ss}}))
            .await
            .expect(404);
        api.post("/api/v1/grants", json!({"data": {"principal_id": p1, "static_secret_id": "ssr_x"}}))
            .await
            .expect(404);
        let g = scenario::grant(&api, ("principal_id", &p1), "static_secret_id", &ss).await;
        api.post("/api/v1/grants", json!({"data": {"principal_id": p1, "static_secret_id": ss}}))
            .await
            .expect(422);
        let got = api.get(&format!("/api/v1/grants/{g}")).await;
        assert_eq!(got.expect(200).data()["principal_id"], p1);
        assert_eq!(got.data()["static_secret_id"], ss);
        assert!(got.data().get("role_id").is_none());
        api.get("/api/v1/principals/prn_nobody/grants").await.expect(404);
        api.get("/api/v1/roles/role_nobody/grants").await.expect(404);
        let empty = api.get(&format!("/api/v1/principals/{p2}/grants")).await;
        assert_eq!(empty.expect(200).json["data"], json!([]));
        api.delete(&format!("/api/v1/grants/{g}")).await.expect(204);
        api.delete(&format!("/api/v1/grants/{g}")).await.expect(404);
        // Roles from another namespace cannot be assigned.
        let r = api
            .post("/api/v1/roles", json!({"data": {"namespace": "elsewhere"}}))
            .await
            .id();
        api.post(&format!("/api/v1/principals/{p1}/roles"), json!({"data": {"role_id": r}}))
            .await
            .expect_field_error(422, "role_id");
        api.post(&format!("/api/v1/principals/{p1}/roles"), json!({"data": {"role_id": "role_x"}}))
            .await
            .expect(404);
    });
}
