//! Sync: the config hash is stable across polls, restarts and unrelated writes, and changes
//! exactly when the delivered config changes; secret values are encrypted at rest.

use serde_json::json;

use crate::scenario;
use crate::support::{api, server};

#[test]
fn config_hash_is_stable_and_tracks_delivered_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let key = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="; // base64 of 32 'A's
    let mut s = server()
        .state_dir(&dir)
        .env("IRON_CONTROL_SECRET_KEY", key)
        .start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (token, h1, api_key) = rt.block_on(async {
        let api = api(&s);
        let prn = scenario::principal(&api, "default", "p").await;
        let ss = scenario::cp_secret(&api, "s", "secret-value-one-9f3a", "h.example").await;
        scenario::grant(&api, ("principal_id", &prn), "static_secret_id", &ss).await;
        let (_, token) = scenario::proxy(&api, Some(&prn)).await;
        let h1 = api.sync(&token, None).await.json["config_hash"].clone();
        assert!(h1.as_str().unwrap().starts_with("sha256:"));
        for _ in 0..3 {
            assert_eq!(api.sync(&token, None).await.json["config_hash"], h1);
        }
        // Unrelated writes: another principal's secret, a label on this principal.
        let other = scenario::principal(&api, "default", "other").await;
        let os = scenario::cp_secret(&api, "o", "secret-value-other-9f3a", "o.example").await;
        scenario::grant(&api, ("principal_id", &other), "static_secret_id", &os).await;
        api.patch(&format!("/api/v1/principals/{prn}"), json!({"data": {"labels": {"a": "b"}}}))
            .await
            .expect(200);
        assert_eq!(api.sync(&token, None).await.json["config_hash"], h1);
        // Re-saving the same value does not change what is delivered.
        api.patch(
            &format!("/api/v1/static_secrets/{ss}"),
            json!({"data": {"source": {"source_type": "control_plane", "secret": "secret-value-one-9f3a", "config": {}}}}),
        )
        .await
        .expect(200);
        assert_eq!(api.sync(&token, None).await.json["config_hash"], h1);
        // Changing the value, the rules, or the injection changes it; reverting restores it.
        api.patch(
            &format!("/api/v1/static_secrets/{ss}"),
            json!({"data": {"source": {"source_type": "control_plane", "secret": "secret-value-two-9f3a", "config": {}}}}),
        )
        .await
        .expect(200);
        let h2 = api.sync(&token, Some(h1.as_str().unwrap())).await;
        assert_ne!(h2.json["config_hash"], h1);
        assert_eq!(h2.json["secrets"][0]["source"]["value"], "secret-value-two-9f3a");
        api.patch(
            &format!("/api/v1/static_secrets/{ss}"),
            json!({"data": {"source": {"source_type": "control_plane", "secret": "secret-value-one-9f3a", "config": {}}}}),
        )
        .await
        .expect(200);
        assert_eq!(api.sync(&token, None).await.json["config_hash"], h1);
        (token, h1, api.key.clone())
    });
    // Encryption at rest: no secret value in the database files.
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        if f.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("control.db")
        {
            let bytes = std::fs::read(&f).unwrap();
            // "secret-value-" is the common prefix of every value written above.
            let hit = bytes.windows(13).any(|w| w == b"secret-value-");
            assert!(!hit, "{} holds a secret value in clear", f.display());
        }
    }
    let raw = std::fs::read(dir.join("control.db")).unwrap_or_default();
    let wal = std::fs::read(dir.join("control.db-wal")).unwrap_or_default();
    assert!(!raw.is_empty() || !wal.is_empty());
    // Restart on the same database and key: same hash, same values; the key is not logged again.
    assert!(s.terminate().success());
    let s2 = server()
        .state_dir(&dir)
        .env("IRON_CONTROL_SECRET_KEY", key)
        .no_bootstrap()
        .start();
    rt.block_on(async {
        let api = crate::support::Api::new(s2.addr, &api_key);
        let again = api.sync(&token, None).await;
        assert_eq!(again.json["config_hash"], h1);
        assert_eq!(
            again.json["secrets"][0]["source"]["value"],
            "secret-value-one-9f3a"
        );
    });
    assert!(!s2.logs().contains("bootstrap api key"));
    // With another key the sealed values cannot be opened: refused, not leaked.
    drop(s2);
    let s3 = server()
        .state_dir(&dir)
        .env(
            "IRON_CONTROL_SECRET_KEY",
            "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=",
        )
        .no_bootstrap()
        .start();
    rt.block_on(async {
        let api = crate::support::Api::new(s3.addr, &api_key);
        let r = api.sync(&token, None).await;
        r.expect(500);
        assert!(!r.text.contains("secret-value"));
    });
}

#[test]
fn server_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let old = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    let new = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    let s = server()
        .state_dir(&dir)
        .env("IRON_CONTROL_SECRET_KEY", old)
        .start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (token, key) = rt.block_on(async {
        let api = api(&s);
        let prn = scenario::principal(&api, "default", "p").await;
        let ss = scenario::cp_secret(&api, "s", "rotate-me", "h").await;
        scenario::grant(&api, ("principal_id", &prn), "static_secret_id", &ss).await;
        (scenario::proxy(&api, Some(&prn)).await.1, api.key.clone())
    });
    drop(s);
    // New key with the old one as previous: still readable; rotate-key re-encrypts.
    let out = std::process::Command::new(crate::support::BIN)
        .args(["rotate-key", "--state-dir"])
        .arg(&dir)
        .env("IRON_CONTROL_SECRET_KEY", new)
        .env("IRON_CONTROL_PREVIOUS_SECRET_KEYS", old)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"resealed\":1"));
    // Only the new key now.
    let s = server()
        .state_dir(&dir)
        .env("IRON_CONTROL_SECRET_KEY", new)
        .no_bootstrap()
        .start();
    rt.block_on(async {
        let api = crate::support::Api::new(s.addr, &key);
        let r = api.sync(&token, None).await;
        assert_eq!(
            r.expect(200).json["secrets"][0]["source"]["value"],
            "rotate-me"
        );
    });
}
