//! `policy suggest`: the recorded paths of one host collapsed into few path patterns.
//!
//! The rules, in order (docs/policy-workflow.md, "How suggest collapses"):
//! 1. A volatile segment becomes `*`: all digits, a UUID, a hex string of 8 or more characters
//!    with a digit, or a token of 20 or more letters, digits, `-` and `_` mixing letters and
//!    digits.
//! 2. Where the paths below one prefix take [`MIN_DISTINCT`] or more different values at the
//!    next segment, and those values look alike (all end there, or two of them continue with
//!    the same segment), that segment becomes `*` and what follows is merged
//!    (`/repos/a/pulls`, `/repos/b/pulls`, `/repos/c/pulls` → `/repos/*/pulls`). Never the
//!    first segment: `/repos`, `/user`, `/orgs` name different parts of an API.
//! 3. A host left with more than [`MAX_PATTERNS`] patterns gets one `/first-segment/*` per
//!    first segment (after rule 2 there are at most a few of those).
//!
//! A pattern whose last segment is `*` also covers everything below it (the allowlist's
//! `/base/*` semantics); after an earlier `*` the last one is written `?*` (one segment), since
//! the allowlist compares the base of a `/base/*` literally.

use std::collections::BTreeMap;

/// Distinct values at one position from which it becomes `*`.
pub const MIN_DISTINCT: usize = 3;
/// Patterns per host beyond which they are cut to their first segment.
pub const MAX_PATTERNS: usize = 16;

/// Requests per (pattern, method).
pub type Patterns = BTreeMap<(String, String), usize>;

/// A path trie: requests ending here by method, and the next segments.
#[derive(Debug, Default, Clone)]
struct Node {
    ends: BTreeMap<String, usize>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, segments: &[String], method: &str, n: usize) {
        match segments.split_first() {
            None => *self.ends.entry(method.to_string()).or_default() += n,
            Some((first, rest)) => self
                .children
                .entry(first.clone())
                .or_default()
                .insert(rest, method, n),
        }
    }

    fn merge(&mut self, other: Node) {
        for (m, n) in other.ends {
            *self.ends.entry(m).or_default() += n;
        }
        for (seg, child) in other.children {
            self.children.entry(seg).or_default().merge(child);
        }
    }

    /// Rule 2, top down: a position with many alike values becomes `*`, then the children.
    fn collapse(&mut self, depth: usize) {
        let literal: Vec<&String> = self
            .children
            .keys()
            .filter(|k| k.as_str() != "*" && !k.is_empty())
            .collect();
        if depth > 0 && literal.len() >= MIN_DISTINCT && self.alike(&literal) {
            let keys: Vec<String> = literal.into_iter().cloned().collect();
            let mut star = self.children.remove("*").unwrap_or_default();
            for k in keys {
                if let Some(child) = self.children.remove(&k) {
                    star.merge(child);
                }
            }
            self.children.insert("*".into(), star);
        }
        for child in self.children.values_mut() {
            child.collapse(depth + 1);
        }
    }

    /// Values that stand for the same kind of thing: all end there, or two of them continue
    /// with the same segment (`octo/pulls`, `hello/pulls`).
    fn alike(&self, keys: &[&String]) -> bool {
        let nodes: Vec<&Node> = keys.iter().filter_map(|k| self.children.get(*k)).collect();
        if nodes.iter().all(|n| n.children.is_empty()) {
            return true;
        }
        let mut seen = std::collections::BTreeSet::new();
        nodes
            .iter()
            .flat_map(|n| n.children.keys())
            .any(|k| !seen.insert(k))
    }

    fn emit(&self, prefix: &str, out: &mut Patterns) {
        for (m, n) in &self.ends {
            let path = pattern(if prefix.is_empty() { "/" } else { prefix });
            *out.entry((path, m.clone())).or_default() += n;
        }
        for (seg, child) in &self.children {
            child.emit(&format!("{prefix}/{seg}"), out);
        }
    }
}

/// A trailing `/*` is a prefix match only after a literal base (`/orders/*`); after another
/// `*` (`/repos/*/issues/*`) the allowlist would compare the base literally, so the last
/// segment is written `?*`: one segment, not empty.
fn pattern(path: &str) -> String {
    match path.strip_suffix("/*") {
        Some(base) if base.contains('*') => format!("{base}/?*"),
        _ => path.to_string(),
    }
}

/// Rule 1: a segment that names one object among many.
pub fn volatile(seg: &str) -> bool {
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    if seg.is_empty() {
        return false;
    }
    if digits == seg.len() {
        return true;
    }
    let uuid = seg.len() == 36
        && seg.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    let hex = seg.len() >= 8 && digits > 0 && seg.bytes().all(|b| b.is_ascii_hexdigit());
    let token = seg.len() >= 20
        && digits > 0
        && seg.bytes().any(|b| b.is_ascii_alphabetic())
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    uuid || hex || token
}

/// `/a/b/` → `["a", "b", ""]`; `/` → `[""]`.
fn segments(path: &str) -> Vec<String> {
    let p = path.strip_prefix('/').unwrap_or(path);
    p.split('/')
        .map(|s| if volatile(s) { "*".into() } else { s.into() })
        .collect()
}

/// Requests per (method, path) → requests per (pattern, method).
pub fn collapse(requests: &BTreeMap<(String, String), usize>) -> Patterns {
    let mut root = Node::default();
    for ((method, path), n) in requests {
        root.insert(&segments(path), method, *n);
    }
    root.collapse(0);
    let mut out = Patterns::new();
    root.emit("", &mut out);
    if distinct(&out) <= MAX_PATTERNS {
        return out;
    }
    let mut cut = Patterns::new();
    for ((path, m), n) in out {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let p = if first.is_empty() || first == "*" {
            "/*".to_string()
        } else {
            format!("/{first}/*")
        };
        *cut.entry((p, m)).or_default() += n;
    }
    cut
}

fn distinct(p: &Patterns) -> usize {
    let mut paths: Vec<&String> = p.keys().map(|(path, _)| path).collect();
    paths.dedup();
    paths.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::match_path;

    fn reqs(list: &[(&str, &str)]) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for (method, path) in list {
            *m.entry((method.to_string(), path.to_string())).or_default() += 1;
        }
        m
    }

    /// Every recorded request is admitted by a pattern of its method.
    fn covers(list: &[(&str, &str)], p: &Patterns) {
        for (m, path) in list {
            assert!(
                p.keys().any(|(pat, pm)| pm == m && match_path(pat, path)),
                "{m} {path} not covered by {:?}",
                paths(p)
            );
        }
    }

    fn paths(p: &Patterns) -> Vec<String> {
        p.keys().map(|(path, m)| format!("{m} {path}")).collect()
    }

    #[test]
    fn volatile_segments() {
        for v in [
            "12345",
            "0",
            "3f2a9c1b",
            "d41d8cd98f00b204e9800998ecf8427e",
            "123e4567-e89b-12d3-a456-426614174000",
            "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        ] {
            assert!(volatile(v), "{v}");
        }
        for v in [
            "",
            "repos",
            "pulls",
            "v1",
            "deadbeef",
            "octo-org",
            "requests-2.31.0.tar.gz",
        ] {
            assert!(!volatile(v), "{v}");
        }
    }

    #[test]
    fn many_values_at_one_position_become_a_star() {
        let list = [
            ("GET", "/repos/octo/pulls"),
            ("GET", "/repos/hello/pulls"),
            ("GET", "/repos/world/pulls"),
            ("POST", "/repos/octo/issues/12"),
            ("GET", "/user"),
        ];
        let got = collapse(&reqs(&list));
        assert_eq!(
            paths(&got),
            ["POST /repos/*/issues/?*", "GET /repos/*/pulls", "GET /user"]
        );
        covers(&list, &got);
        assert!(match_path("/repos/*/issues/?*", "/repos/x/issues/99"));
        assert!(!match_path(
            "/repos/*/issues/?*",
            "/repos/x/issues/99/comments"
        ));
        assert_eq!(got[&("/repos/*/pulls".into(), "GET".into())], 3);
    }

    #[test]
    fn two_values_stay_literal_and_ids_collapse_alone() {
        let list = [
            ("GET", "/repos/octo/hello"),
            ("POST", "/repos/octo/hello/pulls"),
            ("GET", "/orders/1001"),
            ("GET", "/orders/1002/items"),
            ("GET", "/simple/requests/"),
            ("GET", "/"),
        ];
        let got = collapse(&reqs(&list));
        covers(&list, &got);
        assert_eq!(
            paths(&got),
            [
                "GET /",
                "GET /orders/*",
                "GET /orders/*/items",
                "GET /repos/octo/hello",
                "POST /repos/octo/hello/pulls",
                "GET /simple/requests/",
            ]
        );
    }

    #[test]
    fn unalike_values_and_the_first_segment_stay() {
        let got = collapse(&reqs(&[
            ("GET", "/repos/octo/hello"),
            ("GET", "/user"),
            ("GET", "/orgs/x"),
            ("GET", "/v1/models/list"),
            ("GET", "/v1/chat/completions"),
            ("GET", "/v1/files/upload"),
        ]));
        assert_eq!(got.len(), 6, "{:?}", paths(&got));
    }

    #[test]
    fn too_many_patterns_are_cut_to_their_first_segment() {
        // A binary tree five deep: two values per position (rule 2 keeps them), 32 patterns.
        let mut list = BTreeMap::new();
        for i in 0..32u32 {
            let segs: Vec<String> = (0..5).map(|d| format!("d{d}{}", (i >> d) & 1)).collect();
            list.insert(("GET".to_string(), format!("/{}", segs.join("/"))), 1);
        }
        let got = collapse(&list);
        assert_eq!(paths(&got), ["GET /d00/*", "GET /d01/*"]);
        assert_eq!(got.values().sum::<usize>(), 32);
    }
}
