//! intercept.md followed as root, command by command: prepare the host (CA in /etc/iron-agent,
//! the user `iron-ci`, the cgroup and its symlink), save and check `intercept.yaml`, run the
//! agent, make the page's requests as `iron-ci` and from the page's cgroup, detach, then jail one
//! command. The page's hosts are served by an origin in the test namespace of [`World`]
//! (10.231.0.5), which the agent's resolver names (`IRON_DNS_UPSTREAM_RESOLVER`); nothing leaves
//! the machine. Everything the page creates is removed again by [`Undo`].

use std::path::Path;

use iron_agent_tests::dns::fake_zone;
use iron_agent_tests::ebpf_world::{World, echoed_header};
use iron_agent_tests::netns::{cgroup2_mount, sh as host_sh};
use iron_agent_tests::{Origin, OriginKind};

use super::page;
use super::run::Shell;

const PAGE: &str = "intercept.md";
const CA: &str = "/etc/iron-agent/ca.crt";
const PINS: &str = "/sys/fs/bpf/iron-agent";
const LINK: &str = "/run/iron-agent/ci-jobs";

/// What the page's commands create that did not exist before, removed on drop (after the agent
/// stopped: declare it first).
struct Undo {
    etc_dir: bool,
    run_dir: bool,
}

impl Undo {
    /// `None` (with a `SKIP` line) when the host already has what the page would create: an
    /// installed agent's CA or pins, or the user: the test must not touch them.
    fn begin() -> Option<Undo> {
        let taken = [CA, "/etc/iron-agent/ca.key", PINS, LINK]
            .into_iter()
            .find(|p| Path::new(p).symlink_metadata().is_ok())
            .map(str::to_string)
            .or_else(|| {
                host_sh("id -u iron-ci")
                    .status
                    .success()
                    .then(|| "user iron-ci".to_string())
            });
        if let Some(t) = taken {
            println!("SKIP intercept_page_walkthrough: {t} exists on this host");
            eprintln!("SKIP intercept_page_walkthrough: {t} exists on this host");
            return None;
        }
        Some(Undo {
            etc_dir: !Path::new("/etc/iron-agent").exists(),
            run_dir: !Path::new("/run/iron-agent").exists(),
        })
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let _ = host_sh(&format!("rm -rf {PINS}"));
        let _ = std::fs::remove_file(CA);
        let _ = std::fs::remove_file("/etc/iron-agent/ca.key");
        if self.etc_dir {
            let _ = std::fs::remove_dir("/etc/iron-agent");
        }
        let _ = std::fs::remove_file(LINK);
        if self.run_dir {
            let _ = std::fs::remove_dir("/run/iron-agent");
        }
        let _ = std::fs::remove_dir(cgroup2_mount().join("iron-ci-jobs"));
        for _ in 0..50 {
            if host_sh("userdel iron-ci").status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The walkthrough of the issue 12 "Done when": a governed user's request is served under its
/// policy with the credential injected and exactly one audit record; the jailed command too.
#[test]
fn intercept_page_walkthrough() {
    let Some(world) = World::enter("creates a user, a cgroup, /etc/iron-agent and eBPF pins")
    else {
        return;
    };
    let Some(_undo) = Undo::begin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = world.origin_ca.clone();
    let origin: Origin = world.ns.serve_in(move || async move {
        let names = vec!["api.github.com".into(), "registry.npmjs.org".into()];
        Origin::start_on(
            "10.231.0.5:443".parse().unwrap(),
            OriginKind::Https { names },
            Some(&ca),
        )
        .await
    });
    let zone = world.rt.block_on(fake_zone(&[
        ("api.github.com", "10.231.0.5"),
        ("registry.npmjs.org", "10.231.0.5"),
    ]));
    let token = "gh-doc-test-token-91b2";
    let mut sh = Shell::new(PAGE, "intercept_page_walkthrough", dir.path())
        .env("IRON_DNS_UPSTREAM_RESOLVER", zone.to_string())
        .env("SSL_CERT_FILE", world.origin_ca().to_string_lossy())
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0");
    sh.subst("your-token", token);
    // README / getting-started.md: the binary on sudo's PATH first.
    sh.install_agent("sudo install -m 755 target/release/iron-agent /usr/local/bin/iron-agent");

    // Prepare the host: the block's commands in one shell (CG2 is set by one, used by the next).
    let prepare = [
        "sudo iron-agent generate-ca --outdir /etc/iron-agent",
        "sudo useradd --system --no-create-home --shell /usr/sbin/nologin iron-ci",
        "CG2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)",
        "sudo mkdir -p \"$CG2/iron-ci-jobs\" /run/iron-agent",
        "sudo ln -sfn \"$CG2/iron-ci-jobs\" /run/iron-agent/ci-jobs",
    ];
    sh.ok_script(&prepare);
    let target = std::fs::canonicalize(LINK).unwrap();
    assert_eq!(target, cgroup2_mount().join("iron-ci-jobs"));

    // "Save as `intercept.yaml`", check it, run it.
    let text = page(PAGE);
    let config = super::yaml_blocks(Path::new(PAGE), &text)
        .into_iter()
        .next()
        .unwrap()
        .text;
    std::fs::write(dir.path().join("intercept.yaml"), config).unwrap();
    let out = sh.ok("sudo iron-agent check-config --config intercept.yaml");
    assert_eq!(out.trim(), "intercept.yaml: ok");
    let mut agent = sh.spawn_agent(
        "sudo GH_TOKEN=your-token iron-agent run --config intercept.yaml",
        true,
    );

    let allowed = "sudo -u iron-ci curl -sS -o /dev/null -w '%{http_code}\\n' --cacert /etc/iron-agent/ca.crt https://api.github.com/zen";
    assert_eq!(sh.ok(allowed).trim(), "200", "{}", agent.lines.text());
    let a = agent.wait_audits("api.github.com", 1);
    assert_eq!(a[0]["action"], "allow");
    assert_eq!(a[0]["user"], "iron-ci");
    assert_eq!(a[0]["policy"], "ci");
    let injected = a[0]["request_transforms"].to_string();
    assert!(injected.contains("GH_TOKEN"), "{injected}");
    // "token added by the agent": the origin received it (the page's curl discards the body;
    // this one, not a page command, prints the echo).
    let echo = std::process::Command::new("setpriv")
        .args(["--reuid=iron-ci", "--regid=iron-ci", "--clear-groups", "--"])
        .args(["curl", "-sS", "--max-time", "20", "--cacert", CA])
        .arg("https://api.github.com/zen")
        .output()
        .unwrap();
    let echo = String::from_utf8_lossy(&echo.stdout);
    assert_eq!(
        echoed_header(&echo, "authorization"),
        Some(format!("Bearer {token}")),
        "{echo}\n{}",
        agent.lines.text()
    );
    agent.wait_audits("api.github.com", 2);

    let refused = "sudo -u iron-ci curl -sS -o /dev/null -w '%{http_code}\\n' --cacert /etc/iron-agent/ca.crt https://registry.npmjs.org/";
    assert_eq!(sh.ok(refused).trim(), "403", "{}", agent.lines.text());
    let a = agent.wait_audits("registry.npmjs.org", 1);
    assert_eq!(a[0]["action"], "reject");
    assert_eq!(a[0]["policy"], "ci");

    // A job in the page's cgroup, as root (exempt by uid): governed by the cgroup under `ci`,
    // the token injected where the origin sees it.
    let in_cgroup = "sudo sh -c 'echo $$ > /run/iron-agent/ci-jobs/cgroup.procs && exec curl -sS --cacert /etc/iron-agent/ca.crt https://api.github.com/zen'";
    let out = sh.ok(in_cgroup);
    assert_eq!(
        echoed_header(&out, "authorization"),
        Some(format!("Bearer {token}")),
        "{out}\n{}",
        agent.lines.text()
    );
    let a = agent.wait_audits("api.github.com", 3);
    assert_eq!(a[2]["action"], "allow", "{}", a[2]);
    assert_eq!(a[2]["uid"], 0, "{}", a[2]);
    assert_eq!(a[2]["user"], "root", "{}", a[2]);
    assert_eq!(a[2]["comm"], "curl", "{}", a[2]);
    assert_eq!(a[2]["policy"], "ci", "{}", a[2]);
    // What the page says of a name no pipeline allows: it does not resolve (curl's exit 6).
    let nx = std::process::Command::new("setpriv")
        .args(["--reuid=iron-ci", "--regid=iron-ci", "--clear-groups", "--"])
        .args(["curl", "-sS", "--max-time", "10", "https://example.com/"])
        .output()
        .unwrap();
    assert_eq!(nx.status.code(), Some(6), "{nx:?}");
    assert!(agent.audits("example.com").is_empty());
    assert!(!agent.lines.text().contains(token), "the token was logged");
    agent.stop();
    assert!(agent.lines.text().contains("iron-agent detach"));

    // Stopped: the pins stay (fail closed) until `detach` removes them.
    assert!(Path::new(PINS).exists());
    sh.ok("sudo iron-agent detach --config intercept.yaml");
    assert!(!Path::new(PINS).exists());

    // The jail: a private agent on the top-level pipeline, the command as iron-ci, one record.
    let jail = "sudo iron-agent run --config intercept.yaml --user iron-ci -- curl -sS -o /dev/null -w '%{http_code}\\n' --cacert /etc/iron-agent/ca.crt https://registry.npmjs.org/";
    let out = sh.run(jail);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "200", "{}", out.stderr);
    let records: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["msg"] == "request")
        .collect();
    assert_eq!(records.len(), 1, "{}", out.stderr);
    let r = &records[0];
    assert_eq!(r["host"], "registry.npmjs.org");
    assert_eq!(r["action"], "allow");
    assert_eq!(r["user"], "iron-ci");
    assert!(r.get("policy").is_none(), "{r}");
    // Only the allowed requests (the page's, the echo, the cgroup's) and the jailed one reached
    // the origin.
    assert_eq!(origin.hits(), 4);
    let left: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("iron-agent-run-")
        })
        .collect();
    assert!(left.is_empty(), "the jail left pins behind: {left:?}");
}
