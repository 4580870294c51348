//! `1password`: resolves with a service-account token through the `op` CLI (`op read`).
//!
//! The token is read from the env var named by `token_env` on every fetch and handed to `op`
//! as `OP_SERVICE_ACCOUNT_TOKEN`. The caller's 30 s timeout drops the future, which kills `op`.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;

use super::onepassword_connect::{EnvLookup, process_env};
use super::{SecretError, SecretResolver, SecretValue};
use crate::config::transforms::source::OnePasswordSource;

const DEFAULT_TOKEN_ENV: &str = "OP_SERVICE_ACCOUNT_TOKEN";
const NOT_INSTALLED: &str =
    "1password: the `op` CLI is not installed (needed for source type 1password)";
/// Longest excerpt of `op`'s stderr carried into an error.
const MAX_STDERR: usize = 200;

/// Explicit settings instead of the process environment (tests).
#[derive(Clone)]
pub struct OpCliOptions {
    /// Looks up `token_env`.
    pub env: EnvLookup,
    /// `PATH` for the child (also where `op` is searched for); `None` inherits the agent's.
    pub path: Option<OsString>,
}

impl Default for OpCliOptions {
    fn default() -> Self {
        Self {
            env: process_env(),
            path: None,
        }
    }
}

pub fn resolver(s: &OnePasswordSource) -> Result<Arc<dyn SecretResolver>, SecretError> {
    resolver_with(s, OpCliOptions::default())
}

/// As [`resolver`] with explicit environment and `PATH`.
pub fn resolver_with(
    s: &OnePasswordSource,
    opts: OpCliOptions,
) -> Result<Arc<dyn SecretResolver>, SecretError> {
    Ok(Arc::new(OpCliResolver {
        secret_ref: s.secret_ref.clone(),
        token_env: s
            .token_env
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TOKEN_ENV)
            .to_string(),
        opts,
    }))
}

struct OpCliResolver {
    secret_ref: String,
    token_env: String,
    opts: OpCliOptions,
}

impl OpCliResolver {
    fn err(&self, reason: impl Into<String>) -> SecretError {
        SecretError::Remote {
            source_name: self.secret_ref.clone(),
            reason: reason.into(),
        }
    }
}

#[async_trait]
impl SecretResolver for OpCliResolver {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let token = match (self.opts.env)(&self.token_env) {
            Some(t) if !t.trim().is_empty() => t,
            _ => {
                return Err(self.err(format!(
                    "1password: env var {} (service account token) is not set or empty",
                    self.token_env
                )));
            }
        };
        let mut cmd = tokio::process::Command::new("op");
        cmd.arg("read")
            // `--` so a reference can never be taken for an option.
            .arg("--")
            .arg(&self.secret_ref)
            .env("OP_SERVICE_ACCOUNT_TOKEN", token.trim())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = &self.opts.path {
            // std resolves the program through the child's PATH when it is set explicitly.
            cmd.env("PATH", p);
        }
        let out = match cmd.output().await {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.err(NOT_INSTALLED));
            }
            Err(e) => return Err(self.err(format!("1password: running `op`: {e}"))),
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let msg = scrub(&stderr, &[stdout.trim(), token.trim()]);
            let status = match out.status.code() {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            };
            return Err(if msg.is_empty() {
                self.err(format!("1password: `op read` failed ({status})"))
            } else {
                self.err(format!("1password: `op read` failed ({status}): {msg}"))
            });
        }
        let Ok(mut value) = String::from_utf8(out.stdout) else {
            return Err(self.err("1password: `op read` output is not UTF-8"));
        };
        // `op read` ends its output with one newline; the value's own whitespace is kept.
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(self.err("1password: `op read` returned an empty value"));
        }
        Ok(SecretValue::new(value))
    }
}

/// One line of `op`'s stderr, capped, with anything that could be sensitive (whatever `op`
/// printed on stdout, the token) cut out, so the error can be logged.
fn scrub(stderr: &str, sensitive: &[&str]) -> String {
    let mut s = stderr.trim().replace(['\n', '\r'], " ");
    for x in sensitive.iter().filter(|x| !x.is_empty()) {
        s = s.replace(x, "[redacted]");
    }
    if s.len() > MAX_STDERR {
        let mut end = MAX_STDERR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_redacts_and_caps() {
        assert_eq!(scrub(" a\nSECRET b \n", &["SECRET", ""]), "a [redacted] b");
        assert!(scrub(&"x".repeat(500), &[]).chars().count() <= MAX_STDERR + 1);
    }
}
