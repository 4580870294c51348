//! Every fenced ```yaml block in docs/ is a test. A complete config goes through the same
//! validation as `check-config --no-host-checks` (in process: parse, `IRON_*` overrides,
//! semantic checks, what this build refuses); a block whose first line is
//! `# fragment: <what it is part of>` is only parsed as YAML. The rule is in docs/testing.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// One fenced yaml block: where it is and its text.
struct Snippet {
    file: PathBuf,
    line: usize,
    text: String,
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

/// The ```yaml blocks of a markdown text (fence at any indentation; the indentation is removed).
fn yaml_blocks(file: &Path, text: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == "```yaml" || trimmed == "```yml" => {
                current = Some((i + 2, indent, String::new()));
            }
            Some((start, _, body)) if trimmed.starts_with("```") => {
                out.push(Snippet {
                    file: file.to_path_buf(),
                    line: *start,
                    text: std::mem::take(body),
                });
                current = None;
            }
            Some((_, ind, body)) => {
                body.push_str(line.get(*ind..).unwrap_or(line.trim_start()));
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

fn all_snippets() -> Vec<Snippet> {
    let mut files = Vec::new();
    markdown_files(&docs_dir(), &mut files);
    files
        .iter()
        .flat_map(|f| yaml_blocks(f, &std::fs::read_to_string(f).unwrap()))
        .collect()
}

/// Variables a snippet references are set (to a placeholder), except the `IRON_*` overrides,
/// which would replace what the snippet says.
fn env(k: &str) -> Option<String> {
    (!k.starts_with("IRON_")).then(|| "placeholder-value".to_string())
}

/// Why the snippet is not what it claims to be, if it is not.
fn check(s: &Snippet) -> Result<(), String> {
    let first = s.text.lines().next().unwrap_or("");
    if first.trim_start().starts_with("# fragment:") {
        return serde_saphyr::from_str::<serde_json::Value>(&s.text)
            .map(|_| ())
            .map_err(|e| format!("fragment is not valid YAML: {e}"));
    }
    let cfg = iron_agent::config::load_str(&s.text, &env).map_err(|e| {
        format!(
            "not a valid config (mark a partial block with a first line `# fragment: ...`):\n{e}"
        )
    })?;
    let refused = iron_agent::check::unsupported(&cfg);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("\n"))
    }
}

#[test]
fn every_yaml_snippet_in_docs_is_valid() {
    let snippets = all_snippets();
    assert!(
        snippets.len() > 20,
        "found only {} snippets",
        snippets.len()
    );
    let failures: Vec<String> = snippets
        .iter()
        .filter_map(|s| {
            check(s).err().map(|e| {
                format!(
                    "{}:{}: {e}",
                    s.file.strip_prefix(docs_dir()).unwrap_or(&s.file).display(),
                    s.line
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} docs YAML snippets fail:\n\n{}",
        failures.len(),
        snippets.len(),
        failures.join("\n\n")
    );
}

/// The checker itself: a broken config and a broken fragment are caught, with their line.
#[test]
fn snippet_checker_catches_bad_blocks() {
    let md = "text\n```yaml\nproxy:\n  http_lisen: x\n```\n\n  ```yaml\n  # fragment: a list\n  - [unclosed\n  ```\n```yaml\n# fragment: an entry under transforms:\n- name: allowlist\n```\n";
    let blocks = yaml_blocks(Path::new("x.md"), md);
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].line, 3);
    let e = check(&blocks[0]).unwrap_err();
    assert!(e.contains("http_lisen"), "{e}");
    assert!(check(&blocks[1]).unwrap_err().contains("not valid YAML"));
    assert!(check(&blocks[2]).is_ok());
}

/// The line of `page` that starts with `prefix` (after indentation), so a renamed command in the
/// docs fails here instead of silently testing something else.
fn doc_line(page: &str, prefix: &str) -> String {
    page.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"))
        .to_string()
}

/// getting-started.md's commands that need no outside network, as written there: make the CA,
/// save the first config, check it, run it, and have the denied request refused and audited.
#[test]
fn getting_started_commands_work_as_written() {
    let page = std::fs::read_to_string(docs_dir().join("getting-started.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sh = |line: &str| {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = std::process::Command::new(iron_agent_tests::agent::agent_bin())
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = sh(&doc_line(&page, "iron-agent generate-ca --outdir ./ca"));
    assert!(out.contains("wrote ./ca/ca.crt"), "{out}");

    // "Save as `agent.yaml`": the block after the "A first config" heading.
    let first = page
        .find("## A first config")
        .expect("first config section");
    let config = yaml_blocks(Path::new("getting-started.md"), &page[first..])
        .into_iter()
        .next()
        .expect("a yaml block")
        .text;
    std::fs::write(dir.path().join("agent.yaml"), &config).unwrap();
    let check = doc_line(&page, "iron-agent check-config --config agent.yaml");
    assert_eq!(sh(&check).trim(), "agent.yaml: ok");

    // `iron-agent run --config agent.yaml`, on free ports (the page's fixed ones may be taken on
    // a shared machine) and with the CA at the path the config names, relative to `dir`.
    let text = config
        .replace(
            "\"ca/ca.crt\"",
            &format!("{:?}", dir.path().join("ca/ca.crt")),
        )
        .replace(
            "\"ca/ca.key\"",
            &format!("{:?}", dir.path().join("ca/ca.key")),
        );
    let agent = iron_agent_tests::Agent::with_config(&text)
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
        .start();
    let denied = doc_line(
        &page,
        "curl -i -H 'Host: example.org' http://127.0.0.1:8080/",
    );
    let http = agent.addr("http").to_string();
    let url = denied
        .split_whitespace()
        .last()
        .unwrap()
        .replace("127.0.0.1:8080", &http);
    let rt = iron_agent_tests::runtime();
    let out = rt.block_on(iron_agent_tests::curl::curl(
        &["-i", "-H", "Host: example.org", &url],
        &[],
    ));
    assert!(out.stdout.starts_with("HTTP/1.1 403"), "{out:?}");
    let a = agent.audit_where(|a| a["host"] == "example.org");
    assert_eq!(a["action"], "reject");
    assert_eq!(a["rejected_by"], "allowlist");
}

/// installation.md's `install --root` dry run, as written there (in a temporary directory).
#[test]
fn installation_dry_run_commands_work_as_written() {
    let page = std::fs::read_to_string(docs_dir().join("installation.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("iron-dry-run");
    let run = |line: &str| {
        let line = line.replace("/tmp/iron-dry-run", &root.to_string_lossy());
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = std::process::Command::new(iron_agent_tests::agent::agent_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&doc_line(
        &page,
        "iron-agent install --root /tmp/iron-dry-run",
    ));
    assert!(out.contains("governs only users [nobody]"), "{out}");
    let cfg = std::fs::read_to_string(root.join("etc/iron-agent/config.yaml")).unwrap();
    assert!(
        cfg.contains("default: exempt") && cfg.contains("example.com"),
        "{cfg}"
    );
    run(&doc_line(
        &page,
        "iron-agent uninstall --root /tmp/iron-dry-run --purge",
    ));
    assert!(!root.join("etc/iron-agent/config.yaml").exists());
    assert!(!root.join("etc/iron-agent/ca.crt").exists());
}

/// tunnels.md's example config runs, and its `HTTPS_PROXY` client line reaches the tunnel
/// listener (to a host the example does not allow, so nothing leaves the machine: 403 on CONNECT).
#[test]
fn tunnels_example_runs_and_refuses_unlisted_hosts() {
    let page = std::fs::read_to_string(docs_dir().join("tunnels.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = iron_agent_tests::TestCa::new("tunnels doc");
    let (c, k) = ca.write(dir.path());
    let config = yaml_blocks(Path::new("tunnels.md"), &page)
        .into_iter()
        .next()
        .expect("the example")
        .text
        .replace("/etc/iron-agent/ca.crt", &c.to_string_lossy())
        .replace("/etc/iron-agent/ca.key", &k.to_string_lossy());
    let agent = iron_agent_tests::Agent::with_config(&config)
        .env("OPENAI_API_KEY", "sk-doc-test")
        .env("IRON_DNS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_HTTPS_LISTEN", "127.0.0.1:0")
        .env("IRON_PROXY_TUNNEL_LISTEN", "127.0.0.1:0")
        .env("IRON_METRICS_LISTEN", "127.0.0.1:0")
        .start();
    let line = doc_line(&page, "HTTPS_PROXY=http://127.0.0.1:1080 curl");
    assert!(line.contains("curl --cacert ca.crt https://"), "{line}");
    let proxy = format!("http://{}", agent.addr("tunnel"));
    let rt = iron_agent_tests::runtime();
    let out = rt.block_on(iron_agent_tests::curl::curl(
        &["--cacert", &c.to_string_lossy(), "https://example.org/"],
        &[("HTTPS_PROXY", &proxy)],
    ));
    assert!(out.stderr.contains("403"), "{out:?}");
    let a = agent.audit_where(|a| a["host"] == "example.org:443" || a["host"] == "example.org");
    assert_eq!(a["action"], "reject");
}
