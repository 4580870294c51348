//! Operations: commands, startup logs, the bootstrap key, /up, graceful shutdown, exit 1 when
//! the database cannot be opened, the generated server key.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::support::{BIN, api, server};

#[test]
fn version_and_migrate() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("iron-control "));
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("m.db");
    let url = format!("sqlite://{}", db.display());
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["migrate", "--database", &url, "--state-dir"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(db.is_file());
}

#[test]
fn startup_logs_health_and_graceful_shutdown() {
    let mut s = server().start();
    let lines = s.json_lines();
    let listening = lines.iter().find(|v| v["msg"] == "listening").unwrap();
    assert_eq!(listening["listener"], "api");
    assert_eq!(listening["addr"], s.addr.to_string());
    let boot: Vec<_> = lines
        .iter()
        .filter(|v| v["msg"] == "bootstrap api key")
        .collect();
    assert_eq!(boot.len(), 1);
    let key = boot[0]["api_key"].as_str().unwrap();
    assert!(key.starts_with("iak_") && key.len() == 68);
    // The generated server key is private.
    let mode = std::fs::metadata(s.state_dir.join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(&s.state_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0, "state directory is owner-only");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let up = api(&s).with_key("").get("/up").await;
        assert_eq!(up.expect(200).json["status"], "ok");
    });
    let st = s.terminate();
    assert!(st.success(), "SIGTERM exits 0, got {st}");
    s.wait_log(|v| v["msg"] == "stopped");
    // Restart on the same state: no second bootstrap key, the first still works.
    let dir = s.state_dir.clone();
    let s2 = server().state_dir(&dir).no_bootstrap().start();
    rt.block_on(async {
        let api = crate::support::Api::new(s2.addr, key);
        api.get("/api/v1/api_keys").await.expect(200);
    });
    assert!(!s2.logs().contains("bootstrap api key"));
}

#[test]
fn unopenable_database_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    for url in [
        "sqlite:///nonexistent-dir-for-iron-control/x/control.db".to_owned(),
        "postgres://postgres@127.0.0.1:1/none".to_owned(),
        "mysql://localhost/x".to_owned(),
    ] {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                &url,
                "--state-dir",
            ])
            .arg(tmp.path().join("state"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot open the database") || err.contains("must start with"),
            "{url}: {err}"
        );
    }
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(tmp.path().join("s2"))
        .env("IRON_CONTROL_SECRET_KEY", "c2hvcnQ=")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be 32 bytes"));
}
