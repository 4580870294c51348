//! The subset of Go's `text/template` that iron-proxy configs use: literal text, `{{ .Field }}`
//! and `{{ .A.B }}` lookups, string literals, function calls (`{{ base64 "x:" .Value }}`) and
//! pipes (`{{ .Value | base64 }}`), with `{{-`/`-}}` whitespace trimming. Field names are
//! checked when the template is compiled, so a typo is a config error, not a request failure.

mod parse;

use base64::Engine;

pub use parse::TemplateError;

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
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(cmds) => out.push_str(&run_pipeline(cmds, lookup)?),
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

fn run_pipeline(
    cmds: &[Command],
    lookup: &dyn Fn(&[String]) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut carried: Option<String> = None;
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
                call(*f, &vals)
            }
        };
        carried = Some(value);
    }
    Ok(carried.unwrap_or_default())
}

fn eval(
    o: &Operand,
    lookup: &dyn Fn(&[String]) -> Option<String>,
) -> Result<String, TemplateError> {
    match o {
        Operand::Str(s) => Ok(s.clone()),
        // The field name is safe to report; its value never is.
        Operand::Field(path) => {
            lookup(path).ok_or_else(|| TemplateError::MissingValue(format!(".{}", path.join("."))))
        }
    }
}

fn call(f: Func, args: &[String]) -> String {
    let joined: String = args.concat();
    match f {
        Func::Base64 => base64::engine::general_purpose::STANDARD.encode(joined.as_bytes()),
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
}
