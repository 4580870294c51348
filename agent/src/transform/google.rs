//! What `gcp_auth` and `gcp_id_token` share: the Google endpoints the workload's SDKs call
//! (answered with stubs), and the keyfile secret with the token cache built from it.

use std::path::Path;
use std::sync::Arc;

use crate::config::transforms::SecretSource;
use crate::config::transforms::source::FileSource;
use crate::mint::google::{ServiceAccount, parse_service_account};
use crate::mint::{MintError, PerCredentials, TokenCache, TokenSource};
use crate::secrets::Secret;

pub const GOOGLE_TOKEN_HOST: &str = "oauth2.googleapis.com";
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "169.254.169.254"];
const METADATA_SA_PREFIX: &str = "/computeMetadata/v1/instance/service-accounts/";

/// A metadata-server service-account path ending in `leaf` (`/token`, `/identity`).
pub fn is_metadata_sa_path(host: &str, path: &str, leaf: &str) -> bool {
    METADATA_HOSTS.contains(&host) && path.starts_with(METADATA_SA_PREFIX) && path.ends_with(leaf)
}

/// The keyfile's secret source and the config field it came from: `keyfile` as configured, or
/// `keyfile_path` read as a file source (so it is re-read on `ttl` like any secret).
pub fn keyfile_source(
    keyfile: Option<&SecretSource>,
    keyfile_path: Option<&Path>,
) -> Option<(&'static str, SecretSource)> {
    match (keyfile, keyfile_path) {
        (Some(src), None) => Some(("keyfile", src.clone())),
        (None, Some(path)) => Some((
            "keyfile_path",
            SecretSource::File(FileSource {
                path: path.to_string_lossy().into_owned(),
                ..FileSource::default()
            }),
        )),
        _ => None,
    }
}

/// A service-account keyfile and the token cache for its current contents.
pub struct Keyfile {
    secret: Arc<Secret>,
    tokens: PerCredentials,
}

impl Keyfile {
    pub fn new(secret: Arc<Secret>) -> Self {
        Self {
            secret,
            tokens: PerCredentials::default(),
        }
    }

    /// The cache for the keyfile as it is now; `source` builds the token source for a new one.
    pub fn cache(
        &self,
        transform: &'static str,
        source: impl FnOnce(ServiceAccount) -> Arc<dyn TokenSource>,
    ) -> Result<Arc<TokenCache>, MintError> {
        use std::hash::{Hash, Hasher};
        let json = self.secret.current().map_err(|e| MintError::Credential {
            field: "keyfile".into(),
            reason: e.to_string(),
        })?;
        let mut h = self.tokens.hasher();
        json.expose().hash(&mut h);
        self.tokens.get(h.finish(), |replacing| {
            let sa = parse_service_account(json.expose(), "keyfile")?;
            if replacing {
                tracing::info!(transform, service_account = %sa.client_email, "keyfile changed; rebuilding the token source");
            }
            Ok(source(sa))
        })
    }
}
