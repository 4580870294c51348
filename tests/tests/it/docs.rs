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
