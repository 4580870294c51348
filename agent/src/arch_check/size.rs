//! No function over [`MAX_FN_LINES`] lines, no file over [`MAX_FILE_LINES`] lines.

use std::collections::HashMap;

use regex::Regex;

use super::parse::{item_end, line_of, sanitize, strip_tests};
use super::{Source, load_sources};

const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 600;

/// `(file:line name, lines)` of every function body longer than the limit.
fn long_functions(src: &Source) -> Vec<(String, usize)> {
    let re = Regex::new(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let c: Vec<char> = src.code.chars().collect();
    let mut out = Vec::new();
    // Regex offsets are bytes; the sanitized code keeps non-ASCII chars, so map via char_indices.
    let byte_to_char: HashMap<usize, usize> = src
        .code
        .char_indices()
        .enumerate()
        .map(|(ci, (bi, _))| (bi, ci))
        .collect();
    for m in re.captures_iter(&src.code) {
        let start = byte_to_char[&m.get(0).unwrap().start()];
        let Some((end, true)) = item_end(&c, start) else {
            continue;
        };
        let lines = line_of(&c, end - 1) - line_of(&c, start) + 1;
        if lines > MAX_FN_LINES {
            let name = &m[1];
            out.push((
                format!("{}:{} fn {name}", src.rel, line_of(&c, start)),
                lines,
            ));
        }
    }
    out
}

#[test]
fn no_function_over_80_lines() {
    let long: Vec<String> = load_sources()
        .iter()
        .flat_map(long_functions)
        .map(|(f, n)| format!("{f}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_file_over_600_lines() {
    let long: Vec<String> = load_sources()
        .iter()
        .filter(|s| s.lines > MAX_FILE_LINES)
        .map(|s| format!("{}: {} lines", s.rel, s.lines))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn strips_test_items_and_measures_functions() {
    let body = "    x();\n".repeat(MAX_FN_LINES);
    let code = format!(
        "fn long() {{\n{body}}}\n#[cfg(test)]\nmod tests {{\n    fn t() {{\n{body}    }}\n}}\n"
    );
    let (stripped, test_lines) = strip_tests(&sanitize(&code));
    assert_eq!(test_lines, MAX_FN_LINES + 5);
    let src = Source {
        rel: "x.rs".into(),
        module: vec!["x".into()],
        code: stripped,
        lines: 0,
    };
    let long = long_functions(&src);
    assert_eq!(long.len(), 1, "{long:?}");
    assert_eq!(long[0].1, MAX_FN_LINES + 2);
}
