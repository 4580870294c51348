//! Host-name globs for `dns.passthrough` (iron-proxy's `hostmatch.MatchGlob`, §10.2, with our
//! decision 2: case-insensitive, one trailing dot ignored on both sides).
//!
//! * `*` matches every name.
//! * `*.x` matches `x` itself and any subdomain of it, at any depth.
//! * Anything else is a shell glob: `*` is any run of characters (dots included), `?` one
//!   character, `[a-c]` / `[^a-c]` a class, `\c` a literal `c`. A malformed pattern matches nothing.
//!
//! The allowlist has its own matcher in `policy`; this copy is deliberately self-contained.

/// A compiled host glob.
#[derive(Debug, Clone)]
pub struct HostGlob {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Everything,
    /// `*.x`: holds `x`.
    DomainAndSubdomains(String),
    Pattern(Vec<Token>),
    /// Malformed pattern: matches nothing, as in iron-proxy (no config error).
    Never,
}

#[derive(Debug, Clone)]
enum Token {
    Literal(char),
    AnyChar,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl HostGlob {
    pub fn new(pattern: &str) -> Self {
        let pattern = normalize(pattern);
        let kind = if pattern == "*" {
            Kind::Everything
        } else if let Some(domain) = pattern.strip_prefix("*.") {
            Kind::DomainAndSubdomains(domain.to_string())
        } else {
            match parse(&pattern) {
                Some(tokens) => Kind::Pattern(tokens),
                None => Kind::Never,
            }
        };
        Self { kind }
    }

    /// True when the pattern could not be parsed (and therefore matches nothing).
    pub fn is_malformed(&self) -> bool {
        matches!(self.kind, Kind::Never)
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = normalize(host);
        match &self.kind {
            Kind::Everything => true,
            Kind::DomainAndSubdomains(domain) => {
                host == *domain
                    || host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            Kind::Pattern(tokens) => {
                let chars: Vec<char> = host.chars().collect();
                match_tokens(tokens, &chars)
            }
            Kind::Never => false,
        }
    }
}

/// Lower-cases and drops one trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_lowercase()
}

fn parse(pattern: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' => {
                // Consecutive stars are one star; keeps backtracking linear in practice.
                if matches!(tokens.last(), Some(Token::AnyRun)) {
                    continue;
                }
                Token::AnyRun
            }
            '?' => Token::AnyChar,
            '\\' => Token::Literal(chars.next()?),
            '[' => parse_class(&mut chars)?,
            c => Token::Literal(c),
        };
        tokens.push(token);
    }
    Some(tokens)
}

/// Parses after `[` up to and including `]`, Go `path.Match` style.
fn parse_class(chars: &mut std::str::Chars<'_>) -> Option<Token> {
    let mut negated = false;
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = chars.next()?;
        if first && c == '^' {
            negated = true;
            c = chars.next()?;
        }
        if c == ']' && !first {
            break;
        }
        first = false;
        if c == ']' || c == '-' {
            // Go rejects an empty class and an unescaped leading `-`.
            return None;
        }
        let lo = if c == '\\' { chars.next()? } else { c };
        let mut rest = chars.clone();
        let hi = if rest.next() == Some('-') {
            let h = rest.next()?;
            let h = match h {
                '\\' => rest.next()?,
                ']' | '-' => return None,
                h => h,
            };
            *chars = rest;
            h
        } else {
            lo
        };
        if lo > hi {
            return None;
        }
        ranges.push((lo, hi));
    }
    Some(Token::Class { negated, ranges })
}

fn match_one(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyChar => true,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
        Token::AnyRun => false,
    }
}

/// Wildcard matching with single-star backtracking: O(pattern × host) worst case.
fn match_tokens(tokens: &[Token], host: &[char]) -> bool {
    let (mut t, mut h) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while h < host.len() {
        match tokens.get(t) {
            Some(Token::AnyRun) => {
                star = Some((t, h));
                t += 1;
            }
            Some(tok) if match_one(tok, host[h]) => {
                t += 1;
                h += 1;
            }
            _ => match star {
                Some((st, sh)) => {
                    // Let the last star swallow one more character and retry.
                    t = st + 1;
                    h = sh + 1;
                    star = Some((st, sh + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|tok| matches!(tok, Token::AnyRun))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, h: &str) -> bool {
        HostGlob::new(p).matches(h)
    }

    #[test]
    fn star_matches_everything() {
        assert!(m("*", "example.com"));
        assert!(m("*", ""));
        assert!(m("*.", "a.b"));
    }

    #[test]
    fn star_dot_suffix_matches_apex_and_subdomains() {
        assert!(m("*.example.com", "example.com"));
        assert!(m("*.example.com", "a.example.com"));
        assert!(m("*.example.com", "a.b.example.com"));
        assert!(!m("*.example.com", "notexample.com"));
        assert!(!m("*.example.com", "example.com.evil"));
    }

    #[test]
    fn shell_globs() {
        assert!(m("api.*.com", "api.foo.bar.com"));
        assert!(m("*example.com", "evilexample.com"));
        assert!(m("example.*", "example.evil.net"));
        assert!(m("a?c.com", "abc.com"));
        assert!(!m("a?c.com", "ac.com"));
        assert!(m("host[0-9].x", "host7.x"));
        assert!(!m("host[0-9].x", "hosta.x"));
        assert!(m("host[^0-9].x", "hosta.x"));
        assert!(m("exact.com", "exact.com"));
        assert!(!m("exact.com", "exact.co"));
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
        assert!(m("**.x", "a.x"));
        assert!(m("a*b*c", "aXXbYYbZc"));
    }

    #[test]
    fn case_and_trailing_dot_are_ignored() {
        assert!(m("*.Example.COM", "API.example.com."));
        assert!(m("*.example.com.", "api.example.com"));
        assert!(m("Exact.com", "exact.COM."));
        assert!(m("HOST[A-C].x", "hostb.x"));
        assert!(!m("example.com", "example.com.."));
    }

    #[test]
    fn malformed_patterns_match_nothing() {
        for p in ["[abc", "a[]b", "x\\", "[z-a]", "[a-]", "[-a]"] {
            let g = HostGlob::new(p);
            assert!(g.is_malformed(), "{p}");
            assert!(!g.matches("a"), "{p}");
        }
    }
}
