//! Checks the layout rules of `agent/src` (docs/architecture.md, "Layout rules"), so that they
//! are verified on every `cargo test` instead of claimed:
//!
//! - no function over [`MAX_FN_LINES`] lines and no file over [`MAX_FILE_LINES`] lines (test
//!   code excepted: `#[cfg(test)]` items and `tests.rs` files);
//! - no import circle between folders: inside every folder, the graph of its entries (files and
//!   sub-folders, a sub-folder counting as one node with everything below it) has no cycle that
//!   passes through a sub-folder. Files of one folder may use each other freely;
//! - no `static` holding runtime state (interior mutability: `LazyLock`, `OnceLock`, locks,
//!   atomics, cells, `static mut`, `thread_local!`) outside test code, but for an explicit
//!   allowlist: such state is created by the app and passed in.
//!
//! One module per rule ([`size`], [`imports`], [`statics`]); [`parse`] is what they share.
//!
//! Run it alone with `cargo test -p iron-agent --lib arch_check`; `ARCH_CHECK_SRC=<dir>` checks
//! another source tree instead (e.g. an older checkout, to see what it reports).
//!
//! Imports: an import is any `crate::`/`super::`/`self::` path, a `use` of a sibling module, or a path
//! through a name such a `use` bound to a module. `pub use` re-exports are followed to the
//! file that defines the item; a re-export of a folder's own descendants (its facade) is not an
//! import of that folder. The parser knows only what rustfmt-formatted code needs.

mod imports;
mod parse;
mod size;
mod statics;

use std::path::{Path, PathBuf};

use parse::{sanitize, strip_tests};

/// One source file: its module path and its code with comments, literals and test items blanked.
struct Source {
    /// Path relative to `src/`, e.g. `upstream/proxy/dial.rs`.
    rel: String,
    /// Module path, e.g. `["upstream", "proxy", "dial"]` (`mod.rs` is its folder's module).
    module: Vec<String>,
    code: String,
    /// Lines that are not test code.
    lines: usize,
}

/// `agent/src`, or the tree named by `ARCH_CHECK_SRC` (to check another checkout).
fn src_dir() -> PathBuf {
    match std::env::var_os("ARCH_CHECK_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

fn load_sources() -> Vec<Source> {
    let root = src_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.ends_with("/tests.rs") || rel == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let (code, test_lines) = strip_tests(&sanitize(&text));
        let total = text.lines().count();
        out.push(Source {
            module: module_path(&rel),
            rel,
            code,
            lines: total - test_lines,
        });
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}
