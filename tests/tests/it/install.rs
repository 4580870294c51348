//! `iron-agent install | uninstall | status` and `iron-agent run -- CMD`, against the real binary.
//!
//! The `--root` tests run anywhere. The others change this machine (trust store, /usr/local/bin,
//! eBPF programs, cgroups) and need root; without it they print `SKIP` and pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iron_agent_tests::agent::{agent_bin, generate_ca, run_agent};
use iron_agent_tests::config::Log;
use iron_agent_tests::fs_snapshot::{self, Entry};
use iron_agent_tests::netns::{cgroup2_mount, root_turn};
use iron_agent_tests::{AgentConfig, Transform};

/// Why the machine tests need root.
const WHY: &str = "changes the trust store, attaches eBPF programs";

/// Every path below `dir` with its type, mode and content (or link target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fs_snapshot::strict_tree(dir)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_into_root_and_uninstall_restores_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Things that were there before must survive uninstall untouched.
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::write(root.join("etc/systemd/system/other.service"), "[Unit]\n").unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::write(root.join("usr/local/bin/tool"), "#!/bin/sh\n").unwrap();
    let before = tree(root);
    let r = root.to_str().unwrap();

    let out = run_agent(
        &[
            "install",
            "--root",
            r,
            "--allow",
            "api.openai.com,*.example.org",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // One line per step, and the real paths.
    assert!(out.stdout.contains("CA: generated"), "{}", out.stdout);
    assert!(out.stdout.contains("systemd unit: wrote"), "{}", out.stdout);

    let etc = root.join("etc/iron-agent");
    assert_eq!(mode(&etc.join("ca.crt")), 0o644);
    assert_eq!(mode(&etc.join("ca.key")), 0o600);
    assert_eq!(mode(&etc.join("config.yaml")), 0o600);
    let cfg = std::fs::read_to_string(etc.join("config.yaml")).unwrap();
    assert!(
        cfg.contains("- \"api.openai.com\"") && cfg.contains("- \"*.example.org\""),
        "{cfg}"
    );
    assert!(
        cfg.contains("mode: ebpf") && cfg.contains("default: redirect"),
        "{cfg}"
    );
    assert!(cfg.contains("ca_cert: \"/etc/iron-agent/ca.crt\""), "{cfg}");
    // The written config passes the same validation as check-config (its CA paths are the real
    // system's, so not the host checks).
    let check = run_agent(
        &[
            "check-config",
            "--no-host-checks",
            "--config",
            etc.join("config.yaml").to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(check.code, 0, "{}", check.stderr);

    let unit = std::fs::read_to_string(root.join("etc/systemd/system/iron-agent.service")).unwrap();
    assert!(
        unit.contains(
            "\nExecStart=/usr/local/bin/iron-agent run --config /etc/iron-agent/config.yaml\n"
        ),
        "{unit}"
    );
    assert!(
        unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"),
        "{unit}"
    );
    let caps = unit
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .unwrap();
    let mut caps: Vec<&str> = caps
        .trim_start_matches("CapabilityBoundingSet=")
        .split(' ')
        .collect();
    caps.sort_unstable();
    assert_eq!(
        caps,
        [
            "CAP_BPF",
            "CAP_DAC_READ_SEARCH",
            "CAP_NET_ADMIN",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_ADMIN",
            "CAP_SYS_RESOURCE"
        ]
    );
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf /var/lib/iron-agent",
        "Restart=always",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "missing {line} in:\n{unit}"
        );
    }
    let bin = root.join("usr/local/bin/iron-agent");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(agent_bin()).unwrap()
    );
    let anchor = root.join("usr/local/share/ca-certificates/iron-agent.crt");
    let anchor_rhel = root.join("etc/pki/ca-trust/source/anchors/iron-agent.crt");
    let anchor = if anchor.exists() { anchor } else { anchor_rhel };
    assert_eq!(
        std::fs::read(&anchor).unwrap(),
        std::fs::read(etc.join("ca.crt")).unwrap()
    );

    // Idempotent, and the config (edited by the operator) is never overwritten.
    std::fs::write(etc.join("config.yaml"), format!("# edited\n{cfg}")).unwrap();
    let after_first = tree(root);
    let out = run_agent(
        &["install", "--root", r, "--allow", "other.example"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("config: kept existing"),
        "{}",
        out.stdout
    );
    assert_eq!(tree(root), after_first, "a second install changed files");

    let st = run_agent(&["status", "--root", r, "--json"], Duration::from_secs(20));
    assert_eq!(st.code, 0, "{}", st.stderr);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["installed"], true);
    assert_eq!(v["intercept"]["default"], "redirect");

    // Uninstall keeps the CA (and records it); --purge then restores the tree exactly.
    let out = run_agent(&["uninstall", "--root", r], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(etc.join("ca.crt").exists() && etc.join("ca.key").exists());
    assert!(!etc.join("config.yaml").exists());
    assert!(!root.join("etc/systemd/system/iron-agent.service").exists());
    assert!(root.join("etc/systemd/system/other.service").exists());
    assert!(root.join("usr/local/bin/tool").exists() && !bin.exists());
    let out = run_agent(
        &["uninstall", "--root", r, "--purge"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(tree(root), before);
}

#[test]
fn install_validates_a_supplied_config_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let r = root.to_str().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "proxy:\n  http_listen: 12\n  nonsense: true\n").unwrap();
    let out = run_agent(
        &["install", "--root", r, "--config", bad.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is not valid"), "{}", out.stderr);
    assert!(
        tree(&root).len() == 1,
        "a rejected config must leave nothing behind: {:?}",
        tree(&root)
    );

    let good = dir.path().join("good.yaml");
    let text = "dns:\n  proxy_ip: \"127.0.0.1\"\ntls:\n  ca_cert: /etc/iron-agent/ca.crt\n  ca_key: /etc/iron-agent/ca.key\ntransforms:\n  - name: allowlist\n    config:\n      domains: [\"a.example\"]\n";
    std::fs::write(&good, text).unwrap();
    let out = run_agent(
        &["install", "--root", r, "--config", good.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/iron-agent/config.yaml")).unwrap(),
        text
    );
    let out = run_agent(
        &["uninstall", "--root", r, "--purge"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(tree(&root).len(), 1, "{:?}", tree(&root));
}

/// The machine-level paths install writes itself, for an exact before/after comparison. The
/// trust store's output directory (`/etc/ssl/certs`) is compared by content instead
/// ([`certs_snapshot`]): `update-ca-certificates` also relinks entries that are not ours.
fn machine_snapshot() -> BTreeMap<PathBuf, String> {
    let mut all = BTreeMap::new();
    for p in [
        "/etc/iron-agent",
        "/var/lib/iron-agent",
        "/usr/local/bin",
        "/etc/systemd/system",
        "/usr/local/share/ca-certificates",
        "/etc/pki/ca-trust/source/anchors",
        "/sys/fs/bpf/iron-agent",
        "/usr/share/doc/iron-agent",
    ] {
        let p = Path::new(p);
        if p.exists() {
            for (k, v) in tree(p) {
                all.insert(p.join(k), v);
            }
        } else {
            all.insert(p.to_path_buf(), "absent".into());
        }
    }
    all
}

const CERTS: &str = "/etc/ssl/certs";
const LOCAL_ANCHORS: &str = "/usr/local/share/ca-certificates";

/// `/etc/ssl/certs` as found. The Java keystore is left out: its hook re-serializes it on every
/// change (adding and removing our CA leaves different bytes for the same certificates).
fn certs_snapshot() -> fs_snapshot::Snapshot {
    fs_snapshot::Snapshot::take(Path::new(CERTS), |rel| rel.starts_with("java"))
}

/// Puts `/etc/ssl/certs` back as it was found (entries `update-ca-certificates` relinked),
/// even when the test fails; runs after the uninstall guard.
struct RestoreCerts(fs_snapshot::Snapshot);
impl Drop for RestoreCerts {
    fn drop(&mut self) {
        self.0.restore_layout(&certs_snapshot());
    }
}

#[test]
fn install_status_uninstall_on_this_machine() {
    let Some(_turn) = root_turn(WHY) else {
        return;
    };
    if Path::new("/etc/iron-agent").exists()
        || Path::new("/var/lib/iron-agent/install-manifest.json").exists()
    {
        println!(
            "SKIP install_status_uninstall_on_this_machine: iron-agent is already installed here"
        );
        return;
    }
    // As found, to leave it so; then the layout a fresh machine image ships (local anchors as
    // plain files, which update-ca-certificates turns into symlinks), whatever earlier runs left.
    let as_found = certs_snapshot();
    let restore = RestoreCerts(as_found.clone());
    let plain = fs_snapshot::make_local_anchors_plain(Path::new(CERTS), Path::new(LOCAL_ANCHORS));
    if !plain.is_empty() {
        println!("trust store: local anchors as plain files for this test: {plain:?}");
    }
    let certs_before = certs_snapshot();
    let before = machine_snapshot();
    let out = run_agent(
        &["install", "--allow", "example.com"],
        Duration::from_secs(120),
    );
    // Clean up even when an assertion below fails.
    struct Undo;
    impl Drop for Undo {
        fn drop(&mut self) {
            let _ = run_agent(&["uninstall", "--purge"], Duration::from_secs(120));
        }
    }
    let undo = Undo;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    if !Path::new("/run/systemd/system").exists() {
        assert!(
            out.stdout.contains("systemd is not running"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("/usr/local/bin/iron-agent run --config /etc/iron-agent/config.yaml"),
            "{}",
            out.stdout
        );
    }
    assert!(Path::new("/etc/iron-agent/ca.key").exists());
    assert!(Path::new("/etc/systemd/system/iron-agent.service").exists());
    assert!(Path::new("/usr/local/bin/iron-agent").exists());
    let pem = std::fs::read_to_string("/etc/iron-agent/ca.crt").unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let bundle_has_ca = || {
        let bundle: String = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        bundle.contains(&body)
    };
    if Path::new("/usr/sbin/update-ca-certificates").exists() {
        assert!(
            bundle_has_ca(),
            "CA not in /etc/ssl/certs/ca-certificates.crt"
        );
    }

    let st = run_agent(&["status"], Duration::from_secs(20));
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert!(st.stdout.contains("installed    yes"), "{}", st.stdout);
    if !Path::new("/sys/fs/bpf/iron-agent").exists() {
        assert!(st.stdout.contains("attached     no"), "{}", st.stdout);
    }
    let st = run_agent(&["status", "--json"], Duration::from_secs(20));
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["intercept"]["mode"], "ebpf");

    let out = run_agent(&["uninstall", "--purge"], Duration::from_secs(120));
    std::mem::forget(undo);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(!bundle_has_ca(), "CA still in the bundle after uninstall");
    let diff = fs_snapshot::diff(&before, &machine_snapshot());
    assert!(
        diff.is_empty(),
        "machine state differs after uninstall:\n{}",
        diff.join("\n")
    );
    let certs_after = certs_snapshot();
    let diff = fs_snapshot::diff(&certs_before.contents, &certs_after.contents);
    assert!(
        diff.is_empty(),
        "trust store content differs after uninstall:\n{}",
        diff.join("\n")
    );

    // Leave /etc/ssl/certs exactly as found (a second run sees the same machine).
    drop(restore);
    let diff = fs_snapshot::diff(&as_found.strict(), &certs_snapshot().strict());
    assert!(
        diff.is_empty(),
        "/etc/ssl/certs not restored to how it was found:\n{}",
        diff.join("\n")
    );
}

/// What the machine test relies on, without root and without touching /etc: a trust store
/// shipped with a local anchor as a plain file, run through the real `update-ca-certificates`
/// (on temp directories), holds the same certificates although its layout changed, and
/// [`fs_snapshot::Snapshot::restore_layout`] puts the plain file back.
#[test]
fn trust_store_compared_by_content_and_restored_after_update_ca_certificates() {
    let Some(tool) = [
        "/usr/sbin/update-ca-certificates",
        "/sbin/update-ca-certificates",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        println!("SKIP: no update-ca-certificates on this machine");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (certs, anchors, shared) = (
        dir.path().join("certs"),
        dir.path().join("local"),
        dir.path().join("share"),
    );
    for d in [&certs, &anchors, &shared] {
        std::fs::create_dir(d).unwrap();
    }
    // One distribution certificate besides the local anchor, as on a real machine (a bundle
    // of one certificate would look like a certificate file to `openssl rehash`).
    let conf = dir.path().join("ca-certificates.conf");
    std::fs::write(&conf, "distro/distro-ca.crt\n").unwrap();
    std::fs::create_dir(shared.join("distro")).unwrap();
    let distro = iron_agent_tests::TestCa::new("distribution CA");
    std::fs::write(shared.join("distro/distro-ca.crt"), &distro.cert_pem).unwrap();
    let ca = iron_agent_tests::TestCa::new("image CA");
    std::fs::write(anchors.join("image-ca.crt"), &ca.cert_pem).unwrap();
    let update = || {
        let out = Command::new(tool)
            .args(["--certsconf", conf.to_str().unwrap()])
            .args(["--certsdir", shared.to_str().unwrap()])
            .args(["--localcertsdir", anchors.to_str().unwrap()])
            .args(["--etccertsdir", certs.to_str().unwrap()])
            .args(["--hooksdir", dir.path().join("no-hooks").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The image's shape: bundle and hash link built, the anchor's entry a plain file.
    update();
    let plain = fs_snapshot::make_local_anchors_plain(&certs, &anchors);
    assert_eq!(plain, [certs.join("image-ca.pem")]);
    assert!(
        !std::fs::symlink_metadata(&plain[0])
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let fresh = fs_snapshot::Snapshot::take(&certs, |_| false);

    update();
    let after = fs_snapshot::Snapshot::take(&certs, |_| false);
    let strict = fs_snapshot::diff(&fresh.strict(), &after.strict());
    assert_eq!(
        strict.len(),
        1,
        "update-ca-certificates relinks only the plain file: {strict:?}"
    );
    assert_eq!(
        after.entries[Path::new("image-ca.pem")],
        Entry::Link {
            target: anchors.join("image-ca.crt")
        },
        "the layout the old strict diff called a change"
    );
    assert!(
        fs_snapshot::diff(&fresh.contents, &after.contents).is_empty(),
        "same certificates wherever the entries point"
    );

    assert_eq!(
        fresh.restore_layout(&after),
        [PathBuf::from("image-ca.pem")]
    );
    let restored = fs_snapshot::Snapshot::take(&certs, |_| false);
    assert!(fs_snapshot::diff(&fresh.strict(), &restored.strict()).is_empty());
    let md = std::fs::metadata(&plain[0]).unwrap();
    assert_eq!(md.modified().unwrap(), {
        let Entry::File { mtime, .. } = &fresh.entries[Path::new("image-ca.pem")] else {
            panic!("a plain file")
        };
        *mtime
    });

    // A real change in content is not hidden: another certificate under the same name.
    let other = iron_agent_tests::TestCa::new("another CA");
    std::fs::write(anchors.join("image-ca.crt"), &other.cert_pem).unwrap();
    update();
    let changed = fs_snapshot::Snapshot::take(&certs, |_| false);
    assert!(!fs_snapshot::diff(&fresh.contents, &changed.contents).is_empty());
    assert!(fresh.restore_layout(&changed).is_empty());
}

/// A config with a generated CA in a temp dir, for `run -- CMD`.
fn jail_config(dir: &Path) -> PathBuf {
    let (c, k) = generate_ca(dir);
    AgentConfig::jail(&c, &k)
        .transforms([Transform::allowlist(&[])])
        .with(|c| {
            c.log = Some(Log {
                level: "warn".into(),
            })
        })
        .write(&dir.join("jail.yaml"))
}

/// Nothing of run `pid` remains: no pins, no cgroup.
fn assert_cleaned(pid: u32) {
    let pins = PathBuf::from(format!("/sys/fs/bpf/iron-agent-run-{pid}"));
    assert!(!pins.exists(), "{} left behind", pins.display());
    let cg = cgroup2_mount().join(format!("iron-agent.run.{pid}"));
    assert!(!cg.exists(), "{} left behind", cg.display());
}

#[test]
fn run_command_exit_status_and_cgroup() {
    // Attaches eBPF programs to its jail cgroup: not while another test has programs at the root.
    let Some(_turn) = root_turn(WHY) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = jail_config(dir.path());
    let c = cfg.to_str().unwrap();
    let out = run_agent(
        &[
            "run",
            "--config",
            c,
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup; exit 7",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 7, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("/iron-agent.run.{}", out.pid)),
        "CMD did not run in the jail cgroup: {}",
        out.stdout
    );
    assert_cleaned(out.pid);

    let out = run_agent(
        &["run", "--config", c, "--", "sh", "-c", "kill -TERM $$"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 128 + 15, "{}", out.stderr);
    assert_cleaned(out.pid);

    let out = run_agent(
        &["run", "--config", c, "--user", "nobody", "--", "id", "-u"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "65534");

    let out = run_agent(
        &["run", "--config", c, "--", "/nonexistent/cmd"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert_cleaned(out.pid);
}

#[test]
fn run_command_is_governed() {
    // Attaches eBPF programs to its jail cgroup: not while another test has programs at the root.
    let Some(_turn) = root_turn(WHY) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = jail_config(dir.path());
    // TEST-NET-1 on a port that is neither redirected nor allowed: the connect itself must fail
    // (curl exit 7, immediately) instead of timing out (exit 28) or reaching anything.
    let out = run_agent(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--",
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-m",
            "10",
            "http://192.0.2.1:8080/",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert!(
        out.stderr.contains("Couldn't connect") || out.stderr.contains("Failed to connect"),
        "{}",
        out.stderr
    );
    assert_cleaned(out.pid);
}

#[test]
fn run_fails_closed_when_the_agent_cannot_start() {
    // Attaches eBPF programs to its jail cgroup: not while another test has programs at the root.
    let Some(_turn) = root_turn(WHY) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broken.yaml");
    // The CA files do not exist: the agent cannot start, so the command must not run.
    std::fs::write(&cfg, "dns:\n  proxy_ip: \"127.0.0.1\"\ntls:\n  ca_cert: /nonexistent/ca.crt\n  ca_key: /nonexistent/ca.key\n").unwrap();
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let out = run_agent(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("error:"), "{}", out.stderr);
    assert!(
        !marker.exists(),
        "the command ran although the agent did not start"
    );
    assert_cleaned(out.pid);
}

#[test]
fn status_without_installation() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_agent(
        &["status", "--root", dir.path().to_str().unwrap(), "--json"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["installed"], false);
    assert_eq!(v["attached"], false);
}

/// Where cgroup v2 is mounted here (a directory `--govern-cgroup` accepts).
fn cgroup2_root() -> String {
    let out = Command::new("findmnt")
        .args(["-n", "-t", "cgroup2", "-o", "TARGET"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("cgroup v2 mounted")
        .to_string()
}

/// `install` makes the host checks of `check-config` / `run` before it writes anything: an
/// unknown user (from `--govern-user` or in a `--config` file), a cgroup that is not there and a
/// missing CA are refused with their field paths, and the `--root` tree stays empty.
#[test]
fn install_preflight_refuses_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let r = root.to_str().unwrap();
    let out = run_agent(
        &[
            "install",
            "--root",
            r,
            "--govern-user",
            "no-such-user-ih",
            "--govern-cgroup",
            "/sys/fs/cgroup/no-such-cgroup-ih",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    for want in [
        "error: this host is not ready for the config; nothing was written",
        "error: intercept.governed.users[0]: unknown user \"no-such-user-ih\"",
        "error: intercept.governed.cgroups[0]: /sys/fs/cgroup/no-such-cgroup-ih does not exist",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?}:\n{}",
            out.stderr
        );
    }
    assert_eq!(tree(&root).len(), 1, "{:?}", tree(&root));

    // A supplied config: its policy's user, its CA (not install's own paths) and a file secret.
    let cfg = dir.path().join("c.yaml");
    let d = dir.path().display();
    let text = [
        "dns:\n  proxy_ip: \"127.0.0.1\"\ntls:".to_string(),
        format!("  ca_cert: {d}/nope/ca.crt\n  ca_key: {d}/nope/ca.key"),
        "intercept:\n  mode: ebpf\n  default: exempt\n  policies:".to_string(),
        "    - name: ci\n      users: [no-such-user-ih]".to_string(),
        "transforms:\n  - name: secrets\n    config:\n      secrets:".to_string(),
        format!("        - source: {{type: file, path: {d}/token}}"),
        "          inject: {header: X-Key}\n          rules: [{host: a.example}]\n".to_string(),
    ]
    .join("\n");
    std::fs::write(&cfg, text).unwrap();
    let out = run_agent(
        &["install", "--root", r, "--config", cfg.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    for want in [
        "error: intercept.policies[0].users[0]: unknown user \"no-such-user-ih\"",
        "error: tls.ca_cert: cannot read",
        "iron-agent generate-ca --outdir",
        "error: transforms[0].config.secrets[0].source.path: cannot read",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?}:\n{}",
            out.stderr
        );
    }
    assert_eq!(tree(&root).len(), 1, "{:?}", tree(&root));

    // The same host checks pass for users and cgroups that exist.
    let cg = cgroup2_root();
    let out = run_agent(
        &[
            "install",
            "--root",
            r,
            "--govern-user",
            "nobody",
            "--govern-cgroup",
            &cg,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("preflight: users, cgroups, CA and secret files ok"),
        "{}",
        out.stdout
    );
}

/// `install` says what `default: redirect` governs, and `--govern-user` / `--govern-cgroup`
/// write a narrow config instead; the unit points at the docs install puts on the host.
#[test]
fn install_explains_redirect_and_can_start_narrow() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide");
    let out = run_agent(
        &["install", "--root", wide.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("`default: redirect` governs EVERY non-root uid")
            && out.stdout.contains("--govern-user"),
        "{}",
        out.stdout
    );
    let unit = std::fs::read_to_string(wide.join("etc/systemd/system/iron-agent.service")).unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let urls: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        urls.contains(&"file:///usr/share/doc/iron-agent/installation.md"),
        "{unit}"
    );
    for url in urls {
        // Each page is installed, and is the page of this source tree.
        let page = url.strip_prefix("file:///").expect(url);
        let installed = std::fs::read_to_string(wide.join(page)).expect(url);
        let rel = page.strip_prefix("usr/share/doc/iron-agent/").expect(url);
        assert_eq!(
            installed,
            std::fs::read_to_string(docs.join(rel)).unwrap(),
            "{url}"
        );
    }
    assert!(
        wide.join("usr/share/doc/iron-agent/sources/file.md")
            .exists()
    );
    assert!(out.stdout.contains("docs: "), "{}", out.stdout);

    let narrow = dir.path().join("narrow");
    let cg = cgroup2_root();
    let out = run_agent(
        &[
            "install",
            "--root",
            narrow.to_str().unwrap(),
            "--govern-user",
            "nobody",
            "--govern-cgroup",
            &cg,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("governs only users [nobody]"),
        "{}",
        out.stdout
    );
    let cfg_path = narrow.join("etc/iron-agent/config.yaml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg.contains("default: exempt"), "{cfg}");
    assert!(cfg.contains("users: [\"nobody\"]"), "{cfg}");
    assert!(cfg.contains(&format!("cgroups: [\"{cg}\"]")), "{cfg}");
    let check = run_agent(
        &[
            "check-config",
            "--no-host-checks",
            "--config",
            cfg_path.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(check.code, 0, "{}", check.stderr);
}
