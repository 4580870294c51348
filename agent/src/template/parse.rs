//! Lexing and parsing of the template subset.

use super::{Command, Func, Operand, Part};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template syntax: {0}")]
    Syntax(String),
    #[error("unknown template field {0}")]
    UnknownField(String),
    #[error("unknown template function {0:?} (supported: base64, print)")]
    UnknownFunction(String),
    #[error("template field {0} has no value")]
    MissingValue(String),
}

pub(super) fn parse(src: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next_text {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_left =
            after.starts_with('-') && after[1..].starts_with(|c: char| c.is_whitespace());
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.to_string()));
        }
        let body_start = if trim_left { 1 } else { 0 };
        let close = find_close(&after[body_start..])
            .ok_or_else(|| TemplateError::Syntax("unclosed action (missing }})".into()))?;
        let mut body = &after[body_start..body_start + close];
        trim_next_text = false;
        if body.ends_with('-') && body[..body.len() - 1].ends_with(|c: char| c.is_whitespace()) {
            body = &body[..body.len() - 1];
            trim_next_text = true;
        }
        parts.push(Part::Action(parse_pipeline(body)?));
        rest = &after[body_start + close + 2..];
    }
    if rest.contains("}}") {
        return Err(TemplateError::Syntax("unexpected }}".into()));
    }
    let text = if trim_next_text {
        rest.trim_start()
    } else {
        rest
    };
    if !text.is_empty() {
        parts.push(Part::Text(text.to_string()));
    }
    Ok(parts)
}

/// Position of the `}}` closing an action, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, PartialEq)]
enum Token {
    Field(Vec<String>),
    Str(String),
    Ident(String),
    Pipe,
}

fn lex(body: &str) -> Result<Vec<Token>, TemplateError> {
    let mut out = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '|' {
            out.push(Token::Pipe);
            i += 1;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(TemplateError::Syntax("unterminated string".into()));
                };
                i += 1;
                match ch {
                    '"' => break,
                    '\\' => {
                        let esc = chars
                            .get(i)
                            .copied()
                            .ok_or_else(|| TemplateError::Syntax("bad escape".into()))?;
                        i += 1;
                        s.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '\\' => '\\',
                            '"' => '"',
                            other => {
                                return Err(TemplateError::Syntax(format!(
                                    "unsupported escape \\{other}"
                                )));
                            }
                        });
                    }
                    other => s.push(other),
                }
            }
            out.push(Token::Str(s));
        } else if c == '`' {
            let start = i + 1;
            let end = chars[start..]
                .iter()
                .position(|&ch| ch == '`')
                .ok_or_else(|| TemplateError::Syntax("unterminated raw string".into()))?;
            out.push(Token::Str(chars[start..start + end].iter().collect()));
            i = start + end + 1;
        } else if c == '.' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let path: Vec<String> = word.split('.').skip(1).map(str::to_string).collect();
            if path.is_empty() || path.iter().any(String::is_empty) {
                return Err(TemplateError::Syntax(format!(
                    "bad field reference {word:?}"
                )));
            }
            out.push(Token::Field(path));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            return Err(TemplateError::Syntax(format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

fn parse_pipeline(body: &str) -> Result<Vec<Command>, TemplateError> {
    let tokens = lex(body)?;
    if tokens.is_empty() {
        return Err(TemplateError::Syntax("empty action".into()));
    }
    let mut cmds = Vec::new();
    for stage in tokens.split(|t| *t == Token::Pipe) {
        let Some((first, args)) = stage.split_first() else {
            return Err(TemplateError::Syntax("empty pipeline stage".into()));
        };
        let cmd = match first {
            Token::Ident(name) => {
                let f = match name.as_str() {
                    "base64" => Func::Base64,
                    "print" => Func::Print,
                    other => return Err(TemplateError::UnknownFunction(other.to_string())),
                };
                Command::Call(f, args.iter().map(operand).collect::<Result<_, _>>()?)
            }
            other if args.is_empty() => Command::Operand(operand(other)?),
            _ => {
                return Err(TemplateError::Syntax(
                    "only a function can take arguments".into(),
                ));
            }
        };
        cmds.push(cmd);
    }
    Ok(cmds)
}

fn operand(t: &Token) -> Result<Operand, TemplateError> {
    match t {
        Token::Field(p) => Ok(Operand::Field(p.clone())),
        Token::Str(s) => Ok(Operand::Str(s.clone())),
        Token::Ident(name) => Err(TemplateError::Syntax(format!(
            "{name:?} cannot be an argument"
        ))),
        Token::Pipe => Err(TemplateError::Syntax("unexpected |".into())),
    }
}
