//! No import circle between folders (see the module docs of [`super`] for what counts as an
//! import).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex::Regex;

use super::{Source, load_sources};

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
fn no_import_circle_between_folders() {
    let cycles = folder_cycles(&imports(&load_sources()));
    assert!(cycles.is_empty(), "import circles:\n{}", cycles.join("\n"));
}

// The checker's own parts, on small inputs.

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
