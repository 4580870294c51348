//! What a transform constructor gets and returns: the [`Build`] trait every runtime transform
//! implements, its [`BuildContext`], and the one error type, [`TransformBuildError`].

use std::sync::Arc;

use super::Transform;
use crate::mint::TokenHttp;
use crate::secrets::{SecretError, SecretRegistry};
use crate::template::TemplateError;

/// What transform constructors may use besides their own config.
pub struct BuildContext<'a> {
    /// Secrets a transform reads are registered here, resolved before the first request.
    pub secrets: &'a mut SecretRegistry,
    /// The agent's token client (its connector: resolver, upstream proxies, TLS roots), shared
    /// by every credential transform; [`TokenHttp::detached`] when a pipeline is built only to
    /// check a config.
    pub mint: &'a Arc<TokenHttp>,
    /// The next [`Self::instance_id`]: ids are unique among the transforms built from one
    /// context, which is all a request ever runs (one generation of profiles).
    next_instance: u64,
}

impl<'a> BuildContext<'a> {
    pub fn new(secrets: &'a mut SecretRegistry, mint: &'a Arc<TokenHttp>) -> Self {
        Self {
            secrets,
            mint,
            next_instance: 0,
        }
    }

    /// A number no other transform built from this context gets (tells instances of one kind
    /// apart in a request's shared state).
    pub fn instance_id(&mut self) -> u64 {
        let id = self.next_instance;
        self.next_instance += 1;
        id
    }
}

/// A runtime transform built from its kind's config.
pub trait Build: Transform + Sized + 'static {
    type Config;

    fn build(cfg: &Self::Config, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError>;
}

/// Why one transform's `config` cannot be built. `field` is the path inside `config`
/// (`tokens[0].grant`, `secrets[2]`).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TransformBuildError {
    pub field: String,
    #[source]
    pub problem: BuildProblem,
}

/// What is wrong with a field. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum BuildProblem {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("parsing template: {0}")]
    Template(#[source] TemplateError),
    #[error("parsing formatter template: {0}")]
    FormatterTemplate(#[source] TemplateError),
    #[error("invalid match_headers regex {pattern:?}: {source}")]
    Regex {
        pattern: String,
        source: regex::Error,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("references .Credentials.{0}, which is not in credentials")]
    UnknownCredential(String),
}

impl TransformBuildError {
    pub fn new(field: impl Into<String>, problem: impl Into<BuildProblem>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// `field` with a static explanation (`is required`, `is not a valid URL`).
    pub fn invalid(field: impl Into<String>, why: &'static str) -> Self {
        Self::new(field, BuildProblem::Invalid(why))
    }
}
