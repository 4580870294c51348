//! No `static` holding runtime state. Counters, caches, registries and handles are values the
//! app creates at startup and passes down (docs/architecture.md, "No hidden globals"), so two
//! agents or two tests in one process never share them and every dependency is visible in a
//! signature. A `static` is runtime state when its type or initialiser names a lazily set
//! cell, a lock, an atomic or a cell type, or it is `static mut`; `thread_local!` counts too.
//! Constant tables (`static HOP_BY_HOP: [HeaderName; 9]`, embedded bytes) are fine. A wrapper
//! type hiding a lock behind another name is not seen: review catches those.

use regex::Regex;

use super::parse::{item_end, line_of};
use super::{Source, load_sources};

/// Justified exceptions: `(file, static name, why)`. Keep it short; each entry is a global.
const ALLOWED: &[(&str, &str, &str)] = &[
    // libFuzzer calls a plain function per input, so the fuzz entry points build their
    // runtime and handlers once per process; the agent itself never calls them.
    ("fuzzing/mod.rs", "RT", FUZZ),
    ("fuzzing/parse.rs", "MCP", FUZZ),
    ("fuzzing/parse.rs", "HANDLER", FUZZ),
];

const FUZZ: &str = "built once per fuzzing process (libFuzzer calls a plain fn per input); \
                    only the fuzz targets reach it";

/// Names in a `static`'s type or initialiser that mean interior mutability.
const STATEFUL: &[&str] = &[
    "LazyLock", "LazyCell", "OnceLock", "OnceCell", "Lazy", "RwLock", "Mutex", "Condvar", "Atomic",
    "RefCell", "Cell", "ArcSwap",
];

/// `(file:line name, what)` of every stateful `static` outside the allowlist.
fn stateful_statics(src: &Source) -> Vec<String> {
    let re = Regex::new(
        r"(?m)^[ \t]*(?:pub(?:\([^)]*\))?[ \t]+)?static[ \t]+(mut[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*:",
    )
    .unwrap();
    let word = Regex::new(r"[A-Za-z_][A-Za-z0-9_]*").unwrap();
    let c: Vec<char> = src.code.chars().collect();
    let mut out = Vec::new();
    for m in re.captures_iter(&src.code) {
        let name = &m[2];
        if ALLOWED.iter().any(|(f, n, _)| *f == src.rel && *n == name) {
            continue;
        }
        // Byte offset to char offset: the sanitized code may hold non-ASCII characters.
        let start = src.code[..m.get(0).unwrap().start()].chars().count();
        let end = item_end(&c, start).map_or(c.len(), |(e, _)| e);
        let item: String = c[start..end].iter().collect();
        let hit = word
            .find_iter(&item)
            .map(|w| w.as_str())
            .find(|w| STATEFUL.iter().any(|s| w.starts_with(s)));
        let what = match (m.get(1).is_some(), hit) {
            (true, _) => Some("static mut"),
            (false, Some(w)) => Some(w),
            (false, None) => None,
        };
        if let Some(what) = what {
            out.push(format!(
                "{}:{} static {name} ({what})",
                src.rel,
                line_of(&c, start)
            ));
        }
    }
    if src.code.contains("thread_local!") {
        out.push(format!("{}: thread_local!", src.rel));
    }
    out
}

#[test]
fn no_static_holding_runtime_state() {
    let found: Vec<String> = load_sources().iter().flat_map(stateful_statics).collect();
    assert!(
        found.is_empty(),
        "statics holding runtime state (create the value at startup and pass it in, or add \
         a justified entry to arch_check/statics.rs ALLOWED):\n{}",
        found.join("\n")
    );
}

#[test]
fn finds_stateful_statics_and_spares_constant_tables() {
    let code = "use std::sync::LazyLock;\n\
        static TABLE: [u8; 2] = [1, 2];\n\
        pub(crate) static OBJECT: &[u8] = &[];\n\
        static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);\n\
        fn f(x: &'static str) {\n    static SWAP: parking_lot::Mutex<()> = parking_lot::Mutex::new(());\n}\n\
        pub static mut RAW: u32 = 0;\n\
        static HANDLES: Handles<u8> = Handles(RwLock::new(Vec::new()));\n\
        static N: AtomicU64 = AtomicU64::new(0);\n";
    let src = Source {
        rel: "x.rs".into(),
        module: vec!["x".into()],
        code: code.into(),
        lines: 0,
    };
    let found = stateful_statics(&src);
    let names: Vec<&str> = found
        .iter()
        .map(|f| f.split(' ').nth(2).unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["METRICS", "SWAP", "RAW", "HANDLES", "N"],
        "{found:?}"
    );
    assert!(found[0].starts_with("x.rs:4 "), "{found:?}");
}
