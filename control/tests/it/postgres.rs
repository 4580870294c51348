//! PostgreSQL: the shared scenario, encryption at rest, and two replicas on one database
//! (same state through either, one refresh per credential, one bootstrap key).

use serde_json::json;

use crate::broker::setup;
use crate::scenario;
use crate::support::{Api, Postgres, TokenReply, TokenServer, api, eventually, server};

const KEY: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";

#[test]
fn postgres_scenario_and_replicas() {
    let pg = Postgres::start();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The shared scenario on its own database.
    let url = pg.create_db("scenario");
    let s = server()
        .database(&url)
        .env("IRON_CONTROL_SECRET_KEY", KEY)
        .start();
    rt.block_on(scenario::core(&api(&s)));
    drop(s);

    // Two replicas started together on an empty database: one bootstrap key between them.
    let url = pg.create_db("fleet");
    let b1 = server().database(&url).env("IRON_CONTROL_SECRET_KEY", KEY);
    let b2 = server().database(&url).env("IRON_CONTROL_SECRET_KEY", KEY);
    let (a, b) = std::thread::scope(|sc| {
        let h1 = sc.spawn(|| b1.no_bootstrap().start());
        let h2 = sc.spawn(|| b2.no_bootstrap().start());
        (h1.join().unwrap(), h2.join().unwrap())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let keys: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|s| s.json_lines())
        .filter(|v| v["msg"] == "bootstrap api key")
        .map(|v| v["api_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 1, "exactly one bootstrap key across replicas");
    assert_eq!(
        pg.psql("fleet", "SELECT COUNT(*) FROM api_keys").trim(),
        "1"
    );
    let key = &keys[0];
    let (ra, rb) = (Api::new(a.addr, key), Api::new(b.addr, key));

    rt.block_on(async {
        // Written through one replica, served by the other.
        let prn = scenario::principal(&ra, "default", "shared").await;
        let ss = scenario::cp_secret(&ra, "pg-secret", "pg-secret-value-77", "h.example").await;
        scenario::grant(&ra, ("principal_id", &prn), "static_secret_id", &ss).await;
        let (px, token) = scenario::proxy(&ra, Some(&prn)).await;
        rb.get(&format!("/api/v1/proxies/{px}")).await.expect(200);
        let sa = ra.sync(&token, None).await;
        let sb = rb.sync(&token, None).await;
        assert_eq!(sa.json, sb.json);
        assert_eq!(sb.json["secrets"][0]["source"]["value"], "pg-secret-value-77");
        // An update through B is seen by A at once.
        rb.patch(
            &format!("/api/v1/static_secrets/{ss}"),
            json!({"data": {"source": {"source_type": "control_plane", "secret": "pg-secret-value-78", "config": {}}}}),
        )
        .await
        .expect(200);
        let sa2 = ra.sync(&token, None).await;
        assert_eq!(sa2.json["secrets"][0]["source"]["value"], "pg-secret-value-78");
        assert_ne!(sa2.json["config_hash"], sa.json["config_hash"]);
        // Policies and enrollment across replicas.
        ra.post("/v1/policies/network", json!({"name": "all", "priority": 1, "rules": [{"host": "x.example"}]}))
            .await
            .expect(201);
        rb.post("/v1/policies/network", json!({"name": "all", "priority": 2}))
            .await
            .expect(409);
        let enr = ra
            .post("/api/v1/enrollment_tokens", json!({"data": {"tags": ["fleet"], "max_uses": 1}}))
            .await;
        let et = enr.data()["token"].as_str().unwrap().to_owned();
        let anon_a = ra.with_key("");
        let anon_b = rb.with_key("");
        let (r1, r2) = tokio::join!(
            anon_a.post("/api/v1/proxy/enroll", json!({"enrollment_token": et})),
            anon_b.post("/api/v1/proxy/enroll", json!({"enrollment_token": et})),
        );
        let mut st = [r1.status, r2.status];
        st.sort();
        assert_eq!(st, [201, 401], "a max_uses=1 token enrolls once across replicas");

        // The refresh loop runs on both replicas; each refresh happens once.
        let ts = TokenServer::start(vec![TokenReply::Ok {
            access_token: "pg-access-1".into(),
            expires_in: 3600,
            refresh_token: None,
        }])
        .await;
        let (cid, ptoken) = setup(&ra, &ts.url).await;
        rb.patch(
            &format!("/api/v1/broker_credentials/{cid}"),
            json!({"data": {"refresh_token": "pg-refresh-1"}}),
        )
        .await
        .expect(200);
        let v = eventually(10, || async {
            ra.sync(&ptoken, None).await.json["secrets"][0]["source"]["value"]
                .as_str()
                .map(str::to_owned)
        })
        .await;
        assert_eq!(v, "pg-access-1");
        // Several more ticks of both loops: still one request.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(ts.count(), 1, "the credential was refreshed more than once");
        // Reseed five times in a row through alternating replicas: five refreshes, not ten.
        for i in 0..5 {
            let api = if i % 2 == 0 { &ra } else { &rb };
            api.patch(
                &format!("/api/v1/broker_credentials/{cid}"),
                json!({"data": {"refresh_token": format!("pg-refresh-{i}")}}),
            )
            .await
            .expect(200);
            let want = 2 + i;
            eventually(10, || async { (ts.count() >= want).then_some(()) }).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        assert_eq!(ts.count(), 6);
        let c = rb.get(&format!("/api/v1/broker_credentials/{cid}")).await;
        assert_eq!(c.expect(200).data()["status"], "live");
    });

    // Encryption at rest: the values are not in the table data.
    let dump = pg.psql(
        "fleet",
        "SELECT encode(sealed, 'escape') FROM resources WHERE sealed IS NOT NULL UNION ALL \
         SELECT body FROM resources UNION ALL \
         SELECT encode(access_sealed, 'escape') FROM broker_state WHERE access_sealed IS NOT NULL",
    );
    assert!(!dump.is_empty());
    for v in [
        "pg-secret-value",
        "pg-access-1",
        "client-secret-xyz",
        "pg-refresh",
    ] {
        assert!(!dump.contains(v), "{v} stored in clear");
    }
}
