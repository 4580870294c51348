//! What every rule needs: source text with comments, literals and test items blanked, and item
//! boundaries.

/// Replaces comments and the contents of string and char literals with spaces (newlines kept),
/// so braces and paths inside them do not count.
pub(super) fn sanitize(text: &str) -> String {
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
pub(super) fn item_end(c: &[char], from: usize) -> Option<(usize, bool)> {
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
pub(super) fn strip_tests(code: &str) -> (String, usize) {
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

pub(super) fn line_of(c: &[char], idx: usize) -> usize {
    c[..idx].iter().filter(|&&ch| ch == '\n').count() + 1
}

#[test]
fn sanitize_blanks_comments_and_literals() {
    let s = sanitize(
        "let a = \"{ crate::x }\"; // crate::y {\nlet b = '{'; let c: &'static str = r#\"}\"#;",
    );
    assert!(!s.contains("crate::"));
    assert_eq!(s.matches('{').count(), 0, "{s}");
    assert!(s.contains("'static"));
}
