//! The registry of transform kinds, runtime side: one row per kind maps its config (a
//! [`TransformSpec`] variant, see `config::transforms`) to the type that runs it. Every
//! runtime type builds itself through [`Build`] (in `build.rs`), and every failure is a
//! [`TransformBuildError`].
//!
//! Adding a transform kind: a config type and a row in `config::transforms`; a module in
//! `transform/` with a [`Transform`] + [`Build`] impl; a row in the `registry!` table below.

use std::sync::Arc;

use super::allowlist::Allowlist;
use super::annotate::Annotate;
use super::aws_auth::AwsAuth;
use super::body_capture::BodyCapture;
use super::build::{Build, BuildContext, TransformBuildError};
use super::gcp_auth::GcpAuth;
use super::gcp_id_token::GcpIdToken;
use super::grpc::Grpc;
use super::header_allowlist::HeaderAllowlist;
use super::hmac_sign::HmacSign;
use super::judge::Judge;
use super::oauth_token::OauthToken;
use super::secrets::Secrets;
use super::{Pipeline, Transform};
use crate::config::{TransformEntry, TransformSpec};

/// One entry of a `transforms:` list that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("transforms[{index}]: {kind} is not supported yet")]
    Unsupported { index: usize, kind: &'static str },
    #[error("transforms[{index}].config.{source}")]
    Invalid {
        index: usize,
        source: TransformBuildError,
    },
}

/// The runtime table: `Variant => RuntimeType` (the type's [`Build::Config`] is the variant's
/// config), or `Variant => not_yet` for kinds whose runtime does not exist yet. A kind missing
/// here does not compile (the `match` is exhaustive).
macro_rules! registry {
    ($($variant:ident => $runtime:tt,)*) => {
        fn construct(
            spec: &TransformSpec,
            cx: &mut BuildContext<'_>,
        ) -> Result<Option<Arc<dyn Transform>>, TransformBuildError> {
            match spec {
                $(TransformSpec::$variant(cfg) => registry!(@build $runtime, cfg, cx),)*
            }
        }
    };
    (@build not_yet, $cfg:ident, $cx:ident) => {{
        let _ = ($cfg, $cx);
        Ok(None)
    }};
    (@build $runtime:ty, $cfg:ident, $cx:ident) => {
        <$runtime as Build>::build($cfg, $cx).map(|t| Some(Arc::new(t) as Arc<dyn Transform>))
    };
}

registry! {
    Allowlist => Allowlist,
    HeaderAllowlist => HeaderAllowlist,
    Annotate => Annotate,
    Secrets => Secrets,
    BodyCapture => BodyCapture,
    OauthToken => OauthToken,
    GcpAuth => GcpAuth,
    GcpIdToken => GcpIdToken,
    AwsAuth => AwsAuth,
    HmacSign => HmacSign,
    Judge => Judge,
    Grpc => Grpc,
}

/// Builds every transform of a `transforms:` list, registering the secrets they use in
/// `cx.secrets`. Kinds whose runtime does not exist yet are refused: running without them
/// would silently drop a policy. Every failing entry is reported, not just the first.
pub fn build_pipeline(
    entries: &[TransformEntry],
    cx: &mut BuildContext<'_>,
) -> Result<Pipeline, Vec<BuildError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        match construct(&e.spec, cx) {
            Ok(Some(t)) => out.push(t),
            Ok(None) => errors.push(BuildError::Unsupported {
                index,
                kind: e.spec.kind(),
            }),
            Err(source) => errors.push(BuildError::Invalid { index, source }),
        }
    }
    if errors.is_empty() {
        Ok(Pipeline::new(out))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
