//! The subset of Go's `text/template` that iron-proxy configs use: literal text, `{{ .Field }}`
//! and `{{ .A.B }}` lookups, string literals, function calls (`{{ base64 "x:" .Value }}`) and
//! pipes (`{{ .Value | base64 }}`), with `{{-`/`-}}` whitespace trimming. Field names are
//! checked when the template is compiled, so a typo is a config error, not a request failure.

mod parse;

use std::borrow::Cow;

use base64::Engine;

pub use parse::TemplateError;

/// Answers a field path (`["Credentials", "key"]`) with its bytes, borrowed where possible.
pub type ByteLookup<'l, 'a> = &'l dyn Fn(&[String]) -> Option<Cow<'a, [u8]>>;

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Action(Vec<Command>),
}

/// One pipeline stage: a function applied to arguments, or a lone operand.
#[derive(Debug, Clone)]
enum Command {
    Operand(Operand),
    Call(Func, Vec<Operand>),
}

#[derive(Debug, Clone)]
enum Operand {
    Field(Vec<String>),
    Str(String),
}

#[derive(Debug, Clone, Copy)]
enum Func {
    /// Standard base64 of the concatenated arguments (iron-proxy's helper).
    Base64,
    /// Go's `print` for strings: concatenation.
    Print,
}

impl Template {
    /// Compiles `src`. `fields` lists the allowed field paths: `"Value"`, `"Credentials.*"`
    /// (any single name below `Credentials`).
    pub fn parse(src: &str, fields: &[&str]) -> Result<Self, TemplateError> {
        let parts = parse::parse(src)?;
        let t = Template { parts };
        t.check_fields(fields)?;
        Ok(t)
    }

    /// Every field path the template reads, dotted (`Credentials.key`).
    pub fn field_refs(&self) -> Vec<String> {
        self.fields().map(|p| p.join(".")).collect()
    }

    /// Every field reference, in order.
    fn fields(&self) -> impl Iterator<Item = &Vec<String>> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Action(cmds) => Some(cmds),
                Part::Text(_) => None,
            })
            .flatten()
            .flat_map(|c| match c {
                Command::Operand(o) => std::slice::from_ref(o),
                Command::Call(_, args) => args.as_slice(),
            })
            .filter_map(|o| match o {
                Operand::Field(path) => Some(path),
                Operand::Str(_) => None,
            })
    }

    fn check_fields(&self, allowed: &[&str]) -> Result<(), TemplateError> {
        match self.fields().find(|path| !field_allowed(path, allowed)) {
            Some(path) => Err(TemplateError::UnknownField(format!(".{}", path.join(".")))),
            None => Ok(()),
        }
    }

    /// Renders with `lookup` answering field paths (`["Credentials", "key"]`).
    pub fn render(
        &self,
        lookup: &dyn Fn(&[String]) -> Option<String>,
    ) -> Result<String, TemplateError> {
        let bytes = self.render_bytes(&|p| lookup(p).map(|s| Cow::Owned(s.into_bytes())))?;
        // Every input is a `String` and every function returns text, so this cannot fail.
        String::from_utf8(bytes)
            .map_err(|_| TemplateError::Syntax("rendered text is not UTF-8".into()))
    }

    /// Renders to bytes, for values that need not be UTF-8 (a request body that is signed
    /// byte for byte, as Go's `string(body)` would be).
    pub fn render_bytes<'a>(&self, lookup: ByteLookup<'_, 'a>) -> Result<Vec<u8>, TemplateError> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Action(cmds) => out.extend_from_slice(&run_pipeline(cmds, lookup)?),
            }
        }
        Ok(out)
    }
}

fn field_allowed(path: &[String], allowed: &[&str]) -> bool {
    let joined = path.join(".");
    allowed.iter().any(|a| match a.strip_suffix(".*") {
        Some(prefix) => path.len() == 2 && path[0] == prefix,
        None => *a == joined,
    })
}

fn run_pipeline<'a>(
    cmds: &[Command],
    lookup: ByteLookup<'_, 'a>,
) -> Result<Cow<'a, [u8]>, TemplateError> {
    let mut carried: Option<Cow<'a, [u8]>> = None;
    for c in cmds {
        let value = match c {
            Command::Operand(o) => {
                if carried.is_some() {
                    return Err(TemplateError::Syntax(
                        "a pipe can only feed a function".into(),
                    ));
                }
                eval(o, lookup)?
            }
            Command::Call(f, args) => {
                let mut vals = args
                    .iter()
                    .map(|a| eval(a, lookup))
                    .collect::<Result<Vec<_>, _>>()?;
                vals.extend(carried.take());
                Cow::Owned(call(*f, &vals))
            }
        };
        carried = Some(value);
    }
    Ok(carried.unwrap_or_default())
}

fn eval<'a>(o: &Operand, lookup: ByteLookup<'_, 'a>) -> Result<Cow<'a, [u8]>, TemplateError> {
    match o {
        Operand::Str(s) => Ok(Cow::Owned(s.clone().into_bytes())),
        // The field name is safe to report; its value never is.
        Operand::Field(path) => {
            lookup(path).ok_or_else(|| TemplateError::MissingValue(format!(".{}", path.join("."))))
        }
    }
}

fn call(f: Func, args: &[Cow<'_, [u8]>]) -> Vec<u8> {
    let joined: Vec<u8> = args.concat();
    match f {
        Func::Base64 => base64::engine::general_purpose::STANDARD
            .encode(&joined)
            .into_bytes(),
        Func::Print => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, value: &str) -> String {
        let t = Template::parse(src, &["Value"]).unwrap();
        t.render(&|p| (p.len() == 1 && p[0] == "Value").then(|| value.to_string()))
            .unwrap()
    }

    #[test]
    fn forms_users_write() {
        assert_eq!(render("Bearer {{ .Value }}", "k"), "Bearer k");
        assert_eq!(render("Bearer {{.Value}}", "k"), "Bearer k");
        assert_eq!(
            render("{{ base64 \"x-access-token:\" .Value }}", "t"),
            "eC1hY2Nlc3MtdG9rZW46dA=="
        );
        assert_eq!(render("{{ base64 `u:` .Value }}", "p"), "dTpw");
        assert_eq!(render("Basic {{ .Value | base64 }}", "u:p"), "Basic dTpw");
        assert_eq!(render("  {{- .Value -}}  !", "v"), "v!");
        assert_eq!(render("{{ print \"a\" .Value }}", "b"), "ab");
    }

    #[test]
    fn errors_are_config_time() {
        assert!(matches!(
            Template::parse("{{ .Valeu }}", &["Value"]),
            Err(TemplateError::UnknownField(_))
        ));
        assert!(Template::parse("{{ .Value ", &["Value"]).is_err());
        assert!(Template::parse("{{ nosuch .Value }}", &["Value"]).is_err());
        assert!(Template::parse("{{ \"unterminated }}", &["Value"]).is_err());
        let t = Template::parse("{{ .Credentials.key }}", &["Credentials.*"]).unwrap();
        let out = t
            .render(&|p| (p == ["Credentials", "key"]).then(|| "K".to_string()))
            .unwrap();
        assert_eq!(out, "K");
        assert!(Template::parse("{{ .Credentials }}", &["Credentials.*"]).is_err());
    }

    #[test]
    fn bytes_pass_through_unchanged() {
        let t = Template::parse("{{ .Body }}|{{ base64 .Body }}", &["Body"]).unwrap();
        let body: &[u8] = &[0xff, 0x00, b'a'];
        let out = t
            .render_bytes(&|p| (p == ["Body"]).then_some(Cow::Borrowed(body)))
            .unwrap();
        assert_eq!(out, b"\xff\x00a|/wBh");
    }
}
