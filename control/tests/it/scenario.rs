//! A shared scenario run on SQLite and on PostgreSQL: every endpoint family, pagination,
//! labels, upserts, cascades, sync and its hash.

use serde_json::{Value, json};

use crate::support::Api;

pub async fn principal(api: &Api, ns: &str, fid: &str) -> String {
    api.post(
        "/api/v1/principals",
        json!({"data": {"namespace": ns, "foreign_id": fid, "name": fid}}),
    )
    .await
    .expect(201)
    .id()
}

pub async fn cp_secret(api: &Api, fid: &str, value: &str, host: &str) -> String {
    api.post(
        "/api/v1/static_secrets",
        json!({"data": {
            "foreign_id": fid,
            "inject_config": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"},
            "source": {"source_type": "control_plane", "secret": value, "config": {}},
            "rules": [{"host": host, "http_methods": ["GET"]}]
        }}),
    )
    .await
    .expect(201)
    .id()
}

pub async fn grant(api: &Api, grantee: (&str, &str), field: &str, secret: &str) -> String {
    api.post(
        "/api/v1/grants",
        json!({"data": {grantee.0: grantee.1, field: secret}}),
    )
    .await
    .expect(201)
    .id()
}

/// Creates a proxy; returns (id, token).
pub async fn proxy(api: &Api, principal: Option<&str>) -> (String, String) {
    let r = api
        .post(
            "/api/v1/proxies",
            json!({"data": {"name": "edge", "principal_id": principal}}),
        )
        .await;
    r.expect(201);
    let t = r.data()["token"].as_str().unwrap().to_owned();
    (r.id(), t)
}

fn sources(v: &Value) -> Vec<String> {
    v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"]["value"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Principals, roles, assignments, grants through roles, sync and its hash, cascades.
pub async fn core(api: &Api) {
    let prn = principal(api, "acme", "svc").await;
    let role = api
        .post(
            "/api/v1/roles",
            json!({"data": {"namespace": "acme", "foreign_id": "infra", "name": "Infra"}}),
        )
        .await
        .expect(201)
        .id();
    let direct = cp_secret(api, "direct", "value-direct", "a.example").await;
    let via_role = cp_secret(api, "via-role", "value-role", "b.example").await;
    grant(api, ("principal_id", &prn), "static_secret_id", &direct).await;
    grant(api, ("role_id", &role), "static_secret_id", &via_role).await;
    // Also granted directly: the secret must still appear once.
    grant(api, ("principal_id", &prn), "static_secret_id", &via_role).await;
    let (proxy_id, token) = proxy(api, Some(&prn)).await;

    let s1 = api.sync(&token, None).await;
    s1.expect(200);
    assert_eq!(s1.json["status"], "assigned");
    assert_eq!(s1.json["principal_id"], prn);
    assert_eq!(sources(&s1.json), ["value-direct", "value-role"]);

    // The role assignment brings nothing new (already granted directly), but is listed.
    api.post(
        &format!("/api/v1/principals/{prn}/roles"),
        json!({"data": {"role_id": role}}),
    )
    .await
    .expect(201);
    api.post(
        &format!("/api/v1/principals/{prn}/roles"),
        json!({"data": {"role_id": role}}),
    )
    .await
    .expect(422);
    let roles = api.get(&format!("/api/v1/principals/{prn}/roles")).await;
    assert_eq!(roles.expect(200).data()[0]["id"], role);
    let s2 = api.sync(&token, None).await;
    assert_eq!(sources(&s2.json), ["value-direct", "value-role"]);
    assert_eq!(
        s1.json["config_hash"], s2.json["config_hash"],
        "same config, same hash"
    );

    // Matching hash: the hash alone (plus the proxy's tags and ingest token).
    let h = s2.json["config_hash"].as_str().unwrap().to_owned();
    let same = api.sync(&token, Some(&h)).await;
    assert_eq!(
        same.expect(200).json,
        json!({"config_hash": h, "tags": [], "ingest_token": s2.json["ingest_token"]})
    );

    // A secret reachable only through the role.
    let only_role = cp_secret(api, "only-role", "value-only-role", "c.example").await;
    grant(api, ("role_id", &role), "static_secret_id", &only_role).await;
    let s3 = api.sync(&token, Some(&h)).await;
    assert_ne!(s3.json["config_hash"], h);
    assert!(sources(&s3.json).contains(&"value-only-role".to_owned()));

    // Unassigning the role drops it; deleting a secret cascades its grants.
    api.delete(&format!("/api/v1/principals/{prn}/roles/{role}"))
        .await
        .expect(204);
    api.delete(&format!("/api/v1/principals/{prn}/roles/{role}"))
        .await
        .expect(404);
    let s4 = api.sync(&token, None).await;
    assert_eq!(sources(&s4.json), ["value-direct", "value-role"]);
    api.delete(&format!("/api/v1/static_secrets/{direct}"))
        .await
        .expect(204);
    let grants = api.get(&format!("/api/v1/principals/{prn}/grants")).await;
    assert_eq!(grants.expect(200).json["meta"]["total"], 1);
    let s5 = api.sync(&token, None).await;
    assert_eq!(sources(&s5.json), ["value-role"]);

    // Deleting the principal leaves its proxy unassigned with an empty config.
    api.delete(&format!("/api/v1/principals/{prn}"))
        .await
        .expect(204);
    let p = api.get(&format!("/api/v1/proxies/{proxy_id}")).await;
    assert_eq!(p.expect(200).data()["status"], "unassigned");
    assert_eq!(p.data()["principal_assigned_at"], Value::Null);
    let s6 = api.sync(&token, None).await;
    assert_eq!(s6.json["status"], "unassigned");
    assert_eq!(s6.json["principal_id"], Value::Null);
    assert_eq!(s6.json["secrets"], json!([]));
    assert_eq!(s6.json["transforms"], json!([]));
    assert_eq!(s6.json["postgres"], json!([]));

    // A deleted proxy is told so.
    api.delete(&format!("/api/v1/proxies/{proxy_id}"))
        .await
        .expect(204);
    let gone = api.sync(&token, None).await;
    assert_eq!(gone.expect(401).code(), "proxy_revoked");
}
