//! `secrets` (§12.4): inject a secret, or replace a proxy token with it, per entry.

use serde::Deserialize;

use super::KindConfig;
use super::source::validate_required;
use super::{RuleConfig, SecretSource, template, validate_header_patterns, validate_rules};
use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub secrets: Vec<SecretEntry>,
}

/// One secret. Exactly one of `inject`, `replace`, or the legacy top-level replace fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretEntry {
    pub source: Option<SecretSource>,
    pub inject: Option<InjectConfig>,
    pub replace: Option<ReplaceConfig>,
    /// Empty = the secret applies to every destination (documented behaviour, decision 1).
    pub rules: Vec<RuleConfig>,
    /// iron-agent extension (eBPF mode): only these identities may use the secret. A
    /// placeholder presented by anyone else is rejected (`identity_mismatch`); an `inject`
    /// entry is skipped for them.
    pub identities: Option<SecretIdentities>,
    // Legacy replace fields, kept for backwards compatibility. `Option` records presence.
    pub proxy_value: Option<String>,
    pub match_headers: Option<Vec<String>>,
    pub match_body: Option<bool>,
    pub match_path: Option<bool>,
    pub match_query: Option<bool>,
    pub require: Option<bool>,
}

/// `secrets[].identities`: who may use a secret. Any match suffices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretIdentities {
    pub uids: Vec<u32>,
    pub users: Vec<String>,
    /// cgroup v2 directories; a task in the subtree matches.
    pub cgroups: Vec<std::path::PathBuf>,
    /// `intercept.policies[].name`s whose pipeline runs the request.
    pub policies: Vec<String>,
}

impl SecretIdentities {
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
            && self.users.is_empty()
            && self.cgroups.is_empty()
            && self.policies.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectConfig {
    pub header: Option<String>,
    pub query_param: Option<String>,
    /// Go template with `.Value` and the `base64` helper; header values only.
    pub formatter: Option<String>,
    /// Reject (403) when the source cannot be read.
    pub require: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaceConfig {
    pub proxy_value: String,
    /// Empty = scan every header. Literal names or `/regex/` patterns.
    pub match_headers: Vec<String>,
    pub match_body: bool,
    pub match_path: bool,
    pub match_query: bool,
    pub require: bool,
    /// With `require`: a CONNECT request that carries none of the matched headers continues
    /// instead of being rejected (iron-proxy's recent releases).
    pub allow_connect_without_header: bool,
}

/// How an entry applies its secret, after folding the legacy fields into `replace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretMode {
    Inject(InjectConfig),
    Replace(ReplaceConfig),
}

impl SecretEntry {
    fn has_legacy(&self) -> bool {
        self.proxy_value.is_some()
            || self.match_headers.is_some()
            || self.match_body.is_some()
            || self.match_path.is_some()
            || self.match_query.is_some()
            || self.require.is_some()
    }

    /// The effective mode; `None` only for entries that fail validation.
    pub fn mode(&self) -> Option<SecretMode> {
        match (&self.inject, &self.replace, self.has_legacy()) {
            (Some(i), None, false) => Some(SecretMode::Inject(i.clone())),
            (None, Some(r), false) => Some(SecretMode::Replace(r.clone())),
            (None, None, true) => Some(SecretMode::Replace(ReplaceConfig {
                proxy_value: self.proxy_value.clone().unwrap_or_default(),
                match_headers: self.match_headers.clone().unwrap_or_default(),
                match_body: self.match_body.unwrap_or(false),
                match_path: self.match_path.unwrap_or(false),
                match_query: self.match_query.unwrap_or(false),
                require: self.require.unwrap_or(false),
                allow_connect_without_header: false,
            })),
            _ => None,
        }
    }

    /// `path` is the entry's path, e.g. `transforms[1].config.secrets[0]`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        validate_required(self.source.as_ref(), &format!("{path}.source"), errors);
        let legacy = self.has_legacy();
        match (&self.inject, &self.replace) {
            (Some(_), Some(_)) => errors.push(ConfigError::new(
                path,
                "cannot specify both inject and replace",
            )),
            (None, Some(_)) if legacy => errors.push(ConfigError::new(
                path,
                "cannot use both top-level proxy_value/match_headers and replace block",
            )),
            (Some(_), None) if legacy => errors.push(ConfigError::new(
                path,
                "cannot use both top-level proxy_value/match_headers and inject block",
            )),
            (None, None) if !legacy => errors.push(ConfigError::new(
                path,
                "must specify either inject or replace",
            )),
            _ => {}
        }
        if let Some(inj) = &self.inject {
            validate_inject(inj, &format!("{path}.inject"), errors);
        }
        if let Some(r) = &self.replace {
            let p = format!("{path}.replace");
            if r.proxy_value.is_empty() {
                errors.push(ConfigError::new(format!("{p}.proxy_value"), "is required"));
            }
            validate_header_patterns(
                &r.match_headers,
                &format!("{p}.match_headers"),
                "match_headers",
                errors,
            );
        }
        if legacy
            && self.inject.is_none()
            && self.replace.is_none()
            && self.proxy_value.as_deref().is_none_or(str::is_empty)
        {
            errors.push(ConfigError::new(
                format!("{path}.proxy_value"),
                "is required",
            ));
        }
        if let Some(mh) = &self.match_headers {
            validate_header_patterns(
                mh,
                &format!("{path}.match_headers"),
                "match_headers",
                errors,
            );
        }
        validate_rules(&self.rules, &format!("{path}.rules"), errors);
        if self
            .identities
            .as_ref()
            .is_some_and(SecretIdentities::is_empty)
        {
            errors.push(ConfigError::new(
                format!("{path}.identities"),
                "must name at least one of uids, users, cgroups, policies",
            ));
        }
    }
}

/// `path` is the `inject` block's path.
fn validate_inject(inj: &InjectConfig, p: &str, errors: &mut Vec<ConfigError>) {
    match (&inj.header, &inj.query_param) {
        (None, None) => errors.push(ConfigError::new(
            p,
            "must specify either header or query_param",
        )),
        (Some(_), Some(_)) => errors.push(ConfigError::new(
            p,
            "cannot specify both header and query_param",
        )),
        (Some(h), None) if h.trim().is_empty() => {
            errors.push(ConfigError::new(format!("{p}.header"), "must not be empty"))
        }
        (None, Some(q)) if q.trim().is_empty() => errors.push(ConfigError::new(
            format!("{p}.query_param"),
            "must not be empty",
        )),
        _ => {}
    }
    if let Some(f) = &inj.formatter
        && let Err(e) = template::check(f, &["Value"])
    {
        errors.push(ConfigError::new(
            format!("{p}.formatter"),
            format!("parsing formatter template: {e}"),
        ));
    }
}

impl KindConfig for SecretsConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        for (i, e) in self.secrets.iter().enumerate() {
            e.validate(&format!("{path}.secrets[{i}]"), errors);
        }
    }

    fn warnings(&self, path: &str, out: &mut Vec<String>) {
        if self.secrets.is_empty() {
            out.push(format!(
                "{path}.secrets: no entries, so this transform does nothing"
            ));
        }
        for (i, e) in self.secrets.iter().enumerate() {
            let p = format!("{path}.secrets[{i}]");
            if e.rules.is_empty() {
                out.push(format!(
                    "{p}: no rules, so this secret applies to every destination"
                ));
            }
            if let Some(inj) = &e.inject
                && inj.query_param.is_some()
                && inj.formatter.is_some()
            {
                out.push(format!("{p}.inject.formatter: ignored with query_param"));
            }
        }
    }
}
