//! Glob and path matching with iron-proxy's semantics (behaviour doc §10.2, §10.4), except that
//! host names are compared case-insensitively and one trailing dot is ignored.

pub use crate::identify::host::normalize as normalize_host;

/// Matches a normalised host `pattern` against `host` (normalised here):
/// `*` matches everything; `*.x` matches `x` and any subdomain depth; anything else is a shell
/// glob where `*` also crosses dots, `?` is one character and `[a-c]` a class.
pub fn match_glob(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if pattern == "*" {
        return true;
    }
    if let Some(apex) = pattern.strip_prefix("*.") {
        return eq_ci(host, apex)
            || (host.len() > apex.len() + 1
                && host.as_bytes()[host.len() - apex.len() - 1] == b'.'
                && eq_ci(&host[host.len() - apex.len()..], apex));
    }
    if !pattern.contains(['*', '?', '[']) {
        return eq_ci(pattern, host);
    }
    let host = host.to_ascii_lowercase();
    wildcard(pattern.as_bytes(), host.as_bytes(), true)
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Matches a path pattern against a decoded request path. `/base/*` matches the base and any
/// depth below it; otherwise `*` stays within one segment. Case-sensitive.
pub fn match_path(pattern: &str, path: &str) -> bool {
    if let Some(base) = pattern.strip_suffix("/*") {
        return path == base
            || (path.len() > base.len()
                && path.starts_with(base)
                && path.as_bytes()[base.len()] == b'/');
    }
    if !pattern.contains(['*', '?', '[']) {
        return pattern == path;
    }
    wildcard(pattern.as_bytes(), path.as_bytes(), false)
}

/// Iterative glob matcher. `star_crosses_slash` is true for hosts (no `/` in them anyway) and
/// false for paths, like Go's `path.Match`. A malformed class never matches.
fn wildcard(p: &[u8], s: &[u8], star_crosses_slash: bool) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    backtrack = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' if s[si] != b'/' || star_crosses_slash => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(&p[pi..], s[si]) {
                        if matched {
                            pi += next;
                            si += 1;
                            continue;
                        }
                    } else {
                        return false;
                    }
                }
                b'\\' if pi + 1 < p.len() && p[pi + 1] == s[si] => {
                    pi += 2;
                    si += 1;
                    continue;
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((bp, bs)) if star_crosses_slash || s[bs] != b'/' => {
                backtrack = Some((bp, bs + 1));
                pi = bp + 1;
                si = bs + 1;
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Returns (matched, pattern bytes consumed) for a `[...]` class, or None if malformed.
fn match_class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = p.get(i) == Some(&b'^') || p.get(i) == Some(&b'!');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let start = i;
    while i < p.len() {
        if p[i] == b']' && i > start {
            return Some((matched != negate, i + 1));
        }
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if lo <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, h: &str) -> bool {
        match_glob(&normalize_host(p), h)
    }

    #[test]
    fn globs() {
        assert!(g("*", "anything.example"));
        assert!(g("*.example.com", "example.com"));
        assert!(g("*.example.com", "a.b.example.com"));
        assert!(!g("*.example.com", "notexample.com"));
        assert!(g("api.*.com", "api.foo.bar.com"));
        assert!(g("*example.com", "evilexample.com"));
        assert!(g("example.*", "example.evil.net"));
        assert!(g("a?c.com", "abc.com"));
        assert!(g("[a-c]x.com", "bx.com"));
        assert!(!g("[a-c]x.com", "dx.com"));
        assert!(!g("[a-c.com", "a.com"));
    }

    #[test]
    fn case_and_trailing_dot() {
        assert!(g("*.Example.COM", "API.example.com."));
        assert!(g("example.com.", "EXAMPLE.com"));
        assert!(g("Api.*.com", "api.x.COM"));
    }

    #[test]
    fn paths() {
        assert!(match_path("/v1/*", "/v1/a/b"));
        assert!(match_path("/v1/*", "/v1"));
        assert!(!match_path("/v1/*", "/v10"));
        assert!(match_path("/*", ""));
        assert!(match_path("/v1/*/x", "/v1/a/x"));
        assert!(!match_path("/v1/*/x", "/v1/a/b/x"));
        assert!(!match_path("/health", "/health/"));
        assert!(!match_path("/Health", "/health"));
    }
}
