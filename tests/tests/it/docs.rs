//! Every fenced ```yaml block in docs/ is a test. A complete config goes through the same
//! validation as `check-config --no-host-checks` (in process: parse, `IRON_*` overrides,
//! semantic checks, what this build refuses); a block whose first line is
//! `# fragment: <what it is part of>` is only parsed as YAML. The rule is in docs/testing.md.
//!
//! Every shell command of getting-started.md, tunnels.md, installation.md and intercept.md is
//! either run by a test of this module (`shell`, `intercept`; as the page writes it) or listed in
//! [`SHELL`] with the reason it is not; `intercept` follows intercept.md as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod intercept;
mod run;
mod shell;

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

/// How a shell command of a page is covered.
#[derive(Clone, Copy, Debug)]
enum Cover {
    /// Run as written (with the substitutions the page asks for) by these tests of `docs::`.
    Run(&'static [&'static str]),
    /// Not run, and why.
    Not(&'static str),
}

/// The pages whose every shell command is run or listed here.
const SHELL_PAGES: [&str; 4] = [
    "getting-started.md",
    "tunnels.md",
    "installation.md",
    "intercept.md",
];

const GS: &[&str] = &["getting_started_commands_work_as_written"];
const GS_ROOT: &[&str] = &["getting_started_allowed_requests_reach_a_local_origin"];
const TUN: &[&str] = &["tunnels_example_refuses_unlisted_hosts"];
const TUN_ROOT: &[&str] = &["tunnels_clients_reach_a_local_origin_with_the_key_injected"];
const INST: &[&str] = &["installation_dry_run_commands_work_as_written"];
const ICP: &[&str] = &["intercept_page_walkthrough"];
/// The tests that run `iron-agent` as a page's reader would: after getting-started.md put it on
/// `PATH` ([`run::Shell::install_agent`]).
const ON_PATH: &[&str] = &[
    "getting_started_commands_work_as_written",
    "getting_started_allowed_requests_reach_a_local_origin",
    "installation_dry_run_commands_work_as_written",
    "intercept_page_walkthrough",
];

/// Every command of a fenced sh/bash/console block of [`SHELL_PAGES`] (continuation lines joined,
/// comments removed), and how it is covered. `shell_commands_are_run_or_listed` fails on a
/// command missing here and on an entry whose command is no longer on its page.
const SHELL: &[(&str, &str, Cover)] = &[
    (
        "getting-started.md",
        "cargo xtask run",
        Cover::Not(
            "builds the whole workspace (minutes) and runs the agent in the foreground; the binary it runs is what the tests here run",
        ),
    ),
    (
        "getting-started.md",
        "cargo xtask test",
        Cover::Not("the whole suite, these tests included (CI runs it)"),
    ),
    (
        "getting-started.md",
        "sudo install -m 755 target/release/iron-agent /usr/local/bin/iron-agent",
        Cover::Run(ON_PATH),
    ),
    (
        "getting-started.md",
        "iron-agent run --config /etc/iron-agent/agent.yaml",
        Cover::Run(GS),
    ),
    (
        "getting-started.md",
        "iron-agent --config /etc/iron-agent/agent.yaml",
        Cover::Run(GS),
    ),
    (
        "getting-started.md",
        "iron-agent -config /etc/iron-agent/agent.yaml",
        Cover::Run(GS),
    ),
    (
        "getting-started.md",
        "iron-agent check-config --config agent.yaml",
        Cover::Run(GS),
    ),
    (
        "getting-started.md",
        "iron-agent generate-ca --outdir ./ca",
        Cover::Run(GS),
    ),
    (
        "getting-started.md",
        "iron-agent run --config agent.yaml",
        Cover::Run(&[
            "getting_started_commands_work_as_written",
            "getting_started_allowed_requests_reach_a_local_origin",
        ]),
    ),
    (
        "getting-started.md",
        "curl -H 'Host: example.com' http://127.0.0.1:8080/",
        Cover::Run(GS_ROOT),
    ),
    (
        "getting-started.md",
        "http_proxy=http://127.0.0.1:8080 curl http://example.com/",
        Cover::Run(GS_ROOT),
    ),
    (
        "getting-started.md",
        "curl -i -H 'Host: example.org' http://127.0.0.1:8080/",
        Cover::Run(GS),
    ),
    (
        "getting-started.md",
        "curl --connect-to example.com:443:127.0.0.1:8443 --cacert ca/ca.crt https://example.com/",
        Cover::Run(GS_ROOT),
    ),
    (
        "getting-started.md",
        "curl --resolve example.com:443:127.0.0.1 --cacert ca/ca.crt https://example.com/",
        Cover::Run(GS_ROOT),
    ),
    (
        "tunnels.md",
        "HTTPS_PROXY=http://127.0.0.1:1080 curl --cacert ca.crt https://api.openai.com/v1/models",
        Cover::Run(TUN_ROOT),
    ),
    (
        "tunnels.md",
        "ALL_PROXY=socks5h://127.0.0.1:1080 curl --cacert ca.crt https://api.openai.com/v1/models",
        Cover::Run(TUN_ROOT),
    ),
    (
        "tunnels.md",
        "http_proxy=http://127.0.0.1:1080 curl http://example.internal/",
        Cover::Run(TUN),
    ),
    (
        "installation.md",
        "iron-agent install --root /tmp/iron-dry-run --govern-user nobody --allow example.com",
        Cover::Run(INST),
    ),
    (
        "installation.md",
        "cat /tmp/iron-dry-run/etc/iron-agent/config.yaml",
        Cover::Run(INST),
    ),
    (
        "installation.md",
        "iron-agent uninstall --root /tmp/iron-dry-run --purge",
        Cover::Run(INST),
    ),
    (
        "installation.md",
        "sudo iron-agent run --config ci-egress.yaml --user ci -- ./build.sh",
        Cover::Not(
            "a template: the reader's config, user and script; `run --config intercept.yaml --user iron-ci -- curl ...` on intercept.md is run by docs::intercept::intercept_page_walkthrough",
        ),
    ),
    (
        "installation.md",
        "sudo iron-agent generate-ca --outdir /etc/iron-agent",
        Cover::Not(
            "the same command on intercept.md is run by docs::intercept::intercept_page_walkthrough",
        ),
    ),
    (
        "installation.md",
        "sudoedit /etc/iron-agent/config.yaml",
        Cover::Not("interactive: the reader writes their own config"),
    ),
    (
        "installation.md",
        "sudo iron-agent check-config --config /etc/iron-agent/config.yaml",
        Cover::Not(
            "checks the config the reader wrote with sudoedit; the same `sudo iron-agent check-config` on intercept.md's config is run (as root) by docs::intercept::intercept_page_walkthrough",
        ),
    ),
    (
        "installation.md",
        "sudo iron-agent run --config /etc/iron-agent/config.yaml",
        Cover::Not(
            "runs the reader's own config on the host's default pin directory; intercept.md's `run --config intercept.yaml` is run by docs::intercept::intercept_page_walkthrough",
        ),
    ),
    (
        "intercept.md",
        "sudo iron-agent generate-ca --outdir /etc/iron-agent",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo useradd --system --no-create-home --shell /usr/sbin/nologin iron-ci",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "CG2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo mkdir -p \"$CG2/iron-ci-jobs\" /run/iron-agent",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo ln -sfn \"$CG2/iron-ci-jobs\" /run/iron-agent/ci-jobs",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo iron-agent check-config --config intercept.yaml",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo GH_TOKEN=your-token iron-agent run --config intercept.yaml",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo -u iron-ci curl -sS -o /dev/null -w '%{http_code}\\n' --cacert /etc/iron-agent/ca.crt https://api.github.com/zen",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo -u iron-ci curl -sS -o /dev/null -w '%{http_code}\\n' --cacert /etc/iron-agent/ca.crt https://registry.npmjs.org/",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo sh -c 'echo $$ > /run/iron-agent/ci-jobs/cgroup.procs && exec curl -sS --cacert /etc/iron-agent/ca.crt https://api.github.com/zen'",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo iron-agent detach --config intercept.yaml",
        Cover::Run(ICP),
    ),
    (
        "intercept.md",
        "sudo iron-agent run --config intercept.yaml --user iron-ci -- curl -sS -o /dev/null -w '%{http_code}\\n' --cacert /etc/iron-agent/ca.crt https://registry.npmjs.org/",
        Cover::Run(ICP),
    ),
];

fn page(name: &str) -> String {
    std::fs::read_to_string(docs_dir().join(name)).unwrap()
}

/// The text of a shell line up to an unquoted comment (`#` at the start or after a blank).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double, mut prev_blank) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_blank => return line[..i].trim_end(),
            _ => {}
        }
        prev_blank = c.is_whitespace();
    }
    line.trim_end()
}

/// The commands of the fenced sh/bash/shell/console blocks of a markdown text: one per logical
/// line (a trailing `\` joins the next line), comments and blank lines dropped, a leading `$ `
/// prompt removed.
fn shell_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut in_block, mut pending) = (false, String::new());
    for line in text.lines() {
        let t = line.trim();
        if !in_block {
            in_block = matches!(t, "```sh" | "```bash" | "```shell" | "```console");
            continue;
        }
        if t.starts_with("```") {
            assert!(
                pending.is_empty(),
                "block ends in a continuation: {pending}"
            );
            in_block = false;
            continue;
        }
        let code = strip_comment(t.strip_prefix("$ ").unwrap_or(t));
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
        } else if !code.is_empty() || !pending.is_empty() {
            pending.push_str(code);
            out.push(std::mem::take(&mut pending).trim().to_string());
        }
    }
    out
}

/// The source of this module and its children, for the check that a test named in [`SHELL`]
/// names the command in its body.
const SOURCES: [&str; 4] = [
    include_str!("docs.rs"),
    include_str!("docs/shell.rs"),
    include_str!("docs/intercept.rs"),
    include_str!("docs/run.rs"),
];

/// The body of `fn name()` in this module's sources.
fn test_body(name: &str) -> Option<&'static str> {
    SOURCES.iter().find_map(|src| {
        let start = src.find(&format!("fn {name}()"))?;
        let len = src[start..].find("\n}\n")?;
        Some(&src[start..start + len])
    })
}

/// Why the table does not match the pages: a command neither run nor listed, an entry whose
/// command is gone, a test that does not name the command it is said to run.
fn table_problems(pages: &[(&str, Vec<String>)], table: &[(&str, &str, Cover)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, cmds) in pages {
        for c in cmds {
            if !table.iter().any(|(p, t, _)| p == name && t == c) {
                problems.push(format!(
                    "{name}: `{c}` is neither run by a test nor listed in docs::SHELL"
                ));
            }
        }
    }
    for (p, c, cover) in table {
        let on_page = pages
            .iter()
            .any(|(name, cmds)| name == p && cmds.iter().any(|x| x == c));
        if !on_page {
            problems.push(format!(
                "{p}: listed command `{c}` is no longer on the page"
            ));
        }
        if let Cover::Not(reason) = cover
            && reason.trim().is_empty()
        {
            problems.push(format!("{p}: `{c}` is not run and names no reason"));
        }
        if let Cover::Run(tests) = cover {
            for t in *tests {
                let literal = format!("{c:?}");
                if !test_body(t).is_some_and(|b| b.contains(&literal)) {
                    problems.push(format!(
                        "{p}: `{c}` is said to be run by {t}, which does not name it"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn shell_commands_are_run_or_listed() {
    let pages: Vec<(&str, Vec<String>)> = SHELL_PAGES
        .iter()
        .map(|p| (*p, shell_commands(&page(p))))
        .collect();
    assert!(pages.iter().all(|(_, c)| !c.is_empty()), "{pages:?}");
    let problems = table_problems(&pages, SHELL);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The extractor and the table check themselves: continuation lines, comments, prompts, and each
/// kind of mismatch is caught.
#[test]
fn shell_table_check_catches_new_gone_and_unrun_commands() {
    let md = "x\n```sh\n# a comment\n$ a -x 'b # c' \\\n  --y   # note\n\n```\n```yaml\nnot: sh\n```\n```console\nnew-command\n```\n";
    let cmds = shell_commands(md);
    assert_eq!(cmds, ["a -x 'b # c' --y", "new-command"]);
    let table = [
        ("p.md", "a -x 'b # c' --y", Cover::Not("reason")),
        ("p.md", "gone", Cover::Not("reason")),
        (
            "p.md",
            "new-command",
            Cover::Run(&["shell_commands_are_run_or_listed"]),
        ),
    ];
    let problems = table_problems(&[("p.md", cmds)], &table);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`gone` is no longer on the page"));
    assert!(problems[1].contains("does not name it"));
    let problems = table_problems(&[("p.md", vec!["other".into()])], &table[..1]);
    assert!(
        problems[0].contains("`other` is neither run"),
        "{problems:?}"
    );
}
