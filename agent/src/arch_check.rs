//! Checks the layout rules of `agent/src` (docs/architecture.md, "Layout rules"), so that they
//! are verified on every `cargo test` instead of claimed:
//!
//! - no function over [`MAX_FN_LINES`] lines and no file over [`MAX_FILE_LINES`] lines (test
//!   code excepted: `#[cfg(test)]` items and `tests.rs` files);
//! - no import circle between folders: inside every folder, the graph of its entries (files and
//!   sub-folders, a sub-folder counting as one node with everything below it) has no cycle that
//!   passes through a sub-folder. Files of one folder may use each other freely.
//!
//! Run it alone with `cargo test -p iron-agent --lib arch_check`; `ARCH_CHECK_SRC=<dir>` checks
//! another source tree instead (e.g. an older checkout, to see what it reports).
//!
//! An import is any `crate::`/`super::`/`self::` path, a `use` of a sibling module, or a path
//! through a name such a `use` bound to a module. `pub use` re-exports are followed to the
//! file that defines the item; a re-export of a folder's own descendants (its facade) is not an
//! import of that folder. The parser knows only what rustfmt-formatted code needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use regex::Regex;

const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 600;

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
        if rel.ends_with("/tests.rs") || rel == "tests.rs" || rel == "arch_check.rs" {
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

/// Replaces comments and the contents of string and char literals with spaces (newlines kept),
/// so braces and paths inside them do not count.
fn sanitize(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let ident = |i: usize| i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
                blank(&mut out, i, end);
                i = end;
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < c.len() && depth > 0 {
                    if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 1;
                    } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 1;
                    }
                    j += 1;
                }
                blank(&mut out, i, j);
                i = j;
            }
            'r' if !ident(i) && matches!(c.get(i + 1), Some('"' | '#')) => {
                let hashes = (i + 1..c.len()).take_while(|&j| c[j] == '#').count();
                if c.get(i + 1 + hashes) != Some(&'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut j = start;
                while j < c.len() && !c[j..].iter().collect::<String>().starts_with(&closing) {
                    j += 1;
                }
                blank(&mut out, start, j);
                i = j + closing.len();
            }
            '"' => {
                let mut j = i + 1;
                while j < c.len() && c[j] != '"' {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            '\'' => {
                // A char literal ('x', '\n', '\u{..}'), else a lifetime ('a, 'static).
                if c.get(i + 1) == Some(&'\\') {
                    let j = (i + 2..c.len()).find(|&j| c[j] == '\'').unwrap_or(c.len());
                    blank(&mut out, i + 1, j);
                    i = j + 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    blank(&mut out, i + 1, i + 2);
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out.into_iter().collect()
}

/// Index just past the block or `;` that ends the item or signature starting at `from`:
/// the first `{` (matched) or `;` outside parentheses and brackets. `None` if neither.
fn item_end(c: &[char], from: usize) -> Option<(usize, bool)> {
    let mut depth = 0i32;
    let mut i = from;
    while i < c.len() {
        match c[i] {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ';' if depth == 0 => return Some((i + 1, false)),
            '{' if depth == 0 => {
                let mut braces = 0;
                for (j, &ch) in c.iter().enumerate().skip(i) {
                    if ch == '{' {
                        braces += 1;
                    } else if ch == '}' {
                        braces -= 1;
                        if braces == 0 {
                            return Some((j + 1, true));
                        }
                    }
                }
                return None;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Blanks every `#[cfg(test)]` item; returns the code and how many lines were test code.
fn strip_tests(code: &str) -> (String, usize) {
    let mut c: Vec<char> = code.chars().collect();
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut test_lines = 0;
    let mut i = 0;
    while i + attr.len() <= c.len() {
        if c[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let Some((end, _)) = item_end(&c, i + attr.len()) else {
            break;
        };
        test_lines += c[i..end].iter().filter(|&&ch| ch == '\n').count() + 1;
        for ch in &mut c[i..end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = end;
    }
    (c.into_iter().collect(), test_lines)
}

fn line_of(c: &[char], idx: usize) -> usize {
    c[..idx].iter().filter(|&&ch| ch == '\n').count() + 1
}

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

// === imports ===

/// One `use` leaf: the name it binds, the path it names, and whether it is a re-export.
#[derive(Debug, Clone)]
struct UseLeaf {
    bound: String,
    path: Vec<String>,
    public: bool,
}

/// Parses a use tree such as `a::{b, c::{d as e, self}, f::*}` into leaves.
fn use_leaves(tree: &str, prefix: &[String], public: bool, out: &mut Vec<UseLeaf>) {
    let tree = tree.trim();
    // Split the top level on `::` until a `{`.
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let mut p = prefix.to_vec();
        p.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut part = String::new();
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_leaves(&part, &p, public, out);
                    part.clear();
                    continue;
                }
                _ => {}
            }
            part.push(ch);
        }
        if !part.trim().is_empty() {
            use_leaves(&part, &p, public, out);
        }
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    full.extend(path.split("::").map(|s| s.trim().to_string()));
    if full.last().map(String::as_str) == Some("self") {
        full.pop();
    }
    let bound = alias.unwrap_or_else(|| full.last().cloned().unwrap_or_default());
    out.push(UseLeaf {
        bound,
        path: full,
        public,
    });
}

/// The crate's module tree and re-exports, and the resolution of paths to defining files.
struct Crate {
    /// Module path → file (relative to src/).
    modules: BTreeMap<Vec<String>, String>,
    /// Module path → re-exported name → absolute path.
    reexports: HashMap<Vec<String>, Vec<(String, Vec<String>)>>,
}

impl Crate {
    /// Makes a path from a file in `module` absolute (crate-relative); `None` for external crates.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?.as_str();
        let mut base: Vec<String> = match first {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            "super" => {
                let mut m = module.to_vec();
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    m.pop();
                    rest = &rest[1..];
                }
                m.extend(rest.iter().cloned());
                return Some(m);
            }
            _ => {
                let mut child = module.to_vec();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
                module.to_vec()
            }
        };
        let skip = usize::from(matches!(first, "crate" | "self"));
        base.extend(path[skip..].iter().cloned());
        Some(base)
    }

    /// The file that defines what `path` (absolute) names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> Option<String> {
        let mut m: Vec<String> = Vec::new();
        for (i, seg) in path.iter().enumerate() {
            let mut child = m.clone();
            child.push(seg.clone());
            if self.modules.contains_key(&child) {
                m = child;
                continue;
            }
            // An item of module `m`: defined there, or re-exported from elsewhere.
            let reexported = self
                .reexports
                .get(&m)
                .and_then(|e| e.iter().find(|(name, _)| name == seg));
            if depth < 8
                && let Some((_, target)) = reexported
            {
                let mut t = target.clone();
                t.extend(path[i + 1..].iter().cloned());
                if let Some(f) = self.resolve(&t, depth + 1) {
                    return Some(f);
                }
            }
            return self.modules.get(&m).cloned();
        }
        self.modules.get(&m).cloned()
    }
}

fn use_statements(code: &str) -> Vec<(bool, String, std::ops::Range<usize>)> {
    let re = Regex::new(r"(?m)^\s*(pub(\([^)]*\))?\s+)?use\s+([^;]+);").unwrap();
    re.captures_iter(code)
        .map(|m| {
            (
                m.get(1).is_some(),
                m[3].split_whitespace().collect::<Vec<_>>().join(" "),
                m.get(0).unwrap().range(),
            )
        })
        .collect()
}

/// `(from file, to file, evidence)` for every import in the crate's library sources.
fn imports(sources: &[Source]) -> Vec<(String, String, String)> {
    let lib: Vec<&Source> = sources.iter().filter(|s| s.rel != "main.rs").collect();
    let mut krate = Crate {
        modules: lib
            .iter()
            .map(|s| (s.module.clone(), s.rel.clone()))
            .collect(),
        reexports: HashMap::new(),
    };
    let mut uses = HashMap::new();
    for s in &lib {
        let mut leaves = Vec::new();
        for (public, tree, _) in use_statements(&s.code) {
            use_leaves(&tree, &[], public, &mut leaves);
        }
        let mut abs = Vec::new();
        for l in leaves {
            if let Some(p) = krate.absolute(&s.module, &l.path) {
                abs.push(UseLeaf { path: p, ..l });
            }
        }
        let exports = abs
            .iter()
            .filter(|l| l.public)
            .map(|l| (l.bound.clone(), l.path.clone()))
            .collect();
        krate.reexports.insert(s.module.clone(), exports);
        uses.insert(s.rel.clone(), abs);
    }
    let vis = Regex::new(r"pub\(in [^)]*\)").unwrap();
    let path_re =
        Regex::new(r"(^|[^:A-Za-z0-9_])([a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let mut out = Vec::new();
    for s in &lib {
        let leaves = &uses[&s.rel];
        let mut push = |path: &[String], shown: String| {
            if let Some(to) = krate.resolve(path, 0)
                && to != s.rel
            {
                out.push((s.rel.clone(), to, shown));
            }
        };
        for l in leaves {
            // A folder's facade re-exporting its own descendants is not an import.
            let own = l.path.len() > s.module.len() && l.path.starts_with(&s.module);
            if !(l.public && own) {
                push(&l.path, format!("use {}", l.path.join("::")));
            }
        }
        // Paths in code: through crate/super/self, a child module, or a name bound to a module.
        let mut code = s.code.clone();
        for (_, _, range) in use_statements(&s.code).into_iter().rev() {
            code.replace_range(range, "");
        }
        let code = vis.replace_all(&code, "");
        let aliases: HashMap<&str, &Vec<String>> = leaves
            .iter()
            .filter(|l| krate.modules.contains_key(&l.path))
            .map(|l| (l.bound.as_str(), &l.path))
            .collect();
        for m in path_re.captures_iter(&code) {
            let segs: Vec<String> = m[2].split("::").map(String::from).collect();
            let abs = match aliases.get(segs[0].as_str()) {
                Some(base) => {
                    let mut p = (*base).clone();
                    p.extend(segs[1..].iter().cloned());
                    Some(p)
                }
                None => krate.absolute(&s.module, &segs),
            };
            if let Some(p) = abs {
                push(&p, m[2].to_string());
            }
        }
    }
    out
}

/// Cycles through a sub-folder, per folder: `folder: a -> b -> a (evidence)`.
fn folder_cycles(imports: &[(String, String, String)]) -> Vec<String> {
    // folder → (entry → entries it imports, with evidence)
    type Graph = BTreeMap<String, BTreeMap<String, String>>;
    let mut graphs: BTreeMap<String, Graph> = BTreeMap::new();
    for (from, to, shown) in imports {
        let f: Vec<&str> = from.split('/').collect();
        let t: Vec<&str> = to.split('/').collect();
        let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
        // Entries directly below the deepest common folder.
        let entry = |p: &[&str]| {
            if p.len() > common + 1 {
                format!("{}/", p[common])
            } else {
                p[common].to_string()
            }
        };
        let (a, b) = (entry(&f), entry(&t));
        if a == b {
            continue;
        }
        let folder = f[..common].join("/");
        graphs
            .entry(folder)
            .or_default()
            .entry(a)
            .or_default()
            .entry(b)
            .or_insert_with(|| format!("{from}: {shown}"));
    }
    let mut out = Vec::new();
    for (folder, g) in &graphs {
        for scc in sccs(g) {
            if scc.len() > 1 && scc.iter().any(|n| n.ends_with('/')) {
                let set: BTreeSet<&String> = scc.iter().collect();
                let mut why = Vec::new();
                for a in &scc {
                    for (b, ev) in g.get(a).into_iter().flatten() {
                        if set.contains(b) {
                            why.push(format!("    {a} -> {b}   ({ev})"));
                        }
                    }
                }
                out.push(format!(
                    "in src/{folder}: {}\n{}",
                    scc.join(" <-> "),
                    why.join("\n")
                ));
            }
        }
    }
    out
}

/// Strongly connected components (Tarjan).
fn sccs<V>(g: &BTreeMap<String, BTreeMap<String, V>>) -> Vec<Vec<String>> {
    struct St<'a, V> {
        g: &'a BTreeMap<String, BTreeMap<String, V>>,
        index: HashMap<String, usize>,
        low: HashMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit<V>(st: &mut St<'_, V>, v: &str) {
        let i = st.index.len();
        st.index.insert(v.into(), i);
        st.low.insert(v.into(), i);
        st.stack.push(v.into());
        st.on.insert(v.into());
        let next: Vec<String> =
            st.g.get(v)
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
        for w in next {
            if !st.index.contains_key(&w) {
                visit(st, &w);
                let lw = st.low[&w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on.contains(&w) {
                let iw = st.index[&w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            comp.sort();
            st.out.push(comp);
        }
    }
    let mut st = St {
        g,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: Vec<String> = g.keys().cloned().collect();
    for n in nodes {
        if !st.index.contains_key(&n) {
            visit(&mut st, &n);
        }
    }
    st.out
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
fn no_import_circle_between_folders() {
    let cycles = folder_cycles(&imports(&load_sources()));
    assert!(cycles.is_empty(), "import circles:\n{}", cycles.join("\n"));
}

// The checker's own parts, on small inputs.

#[test]
fn sanitize_blanks_comments_and_literals() {
    let s = sanitize(
        "let a = \"{ crate::x }\"; // crate::y {\nlet b = '{'; let c: &'static str = r#\"}\"#;",
    );
    assert!(!s.contains("crate::"));
    assert_eq!(s.matches('{').count(), 0, "{s}");
    assert!(s.contains("'static"));
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

#[test]
fn finds_a_circle_through_a_folder() {
    let imports = vec![
        (
            "up/connect.rs".to_string(),
            "up/proxy/dial.rs".to_string(),
            "a".to_string(),
        ),
        (
            "up/proxy/dial.rs".into(),
            "up/connect.rs".into(),
            "b".into(),
        ),
        ("up/mod.rs".into(), "up/client.rs".into(), "c".into()),
        ("up/client.rs".into(), "up/mod.rs".into(), "d".into()),
    ];
    let cycles = folder_cycles(&imports);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].contains("connect.rs <-> proxy/"), "{}", cycles[0]);
}

#[test]
fn use_trees_resolve_through_reexports() {
    let mut leaves = Vec::new();
    use_leaves(
        "super::{io::X, proxy::{self, Dialed as D}}",
        &[],
        false,
        &mut leaves,
    );
    let bound: Vec<&str> = leaves.iter().map(|l| l.bound.as_str()).collect();
    assert_eq!(bound, ["X", "proxy", "D"]);
    assert_eq!(leaves[1].path, ["super", "proxy"]);
}
