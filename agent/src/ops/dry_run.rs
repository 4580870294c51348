//! The side-effect-free evaluation behind `policy test` and `policy replay`: the config is
//! loaded and its identity profiles built exactly as the agent builds them
//! ([`crate::app::build_profiles`]), but with a detached token client (every token endpoint or
//! LLM call is refused before any DNS lookup or dial) and placeholder secrets (no secret store
//! is read). Requests then run through the real [`crate::transform::Pipeline`]
//! ([`Pipeline::dry_run_request`](crate::transform::Pipeline::dry_run_request)), and the
//! deciding allowlist rule comes from the same compiled [`AllowRules`] the `allowlist`
//! transform uses.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::OpsError;
use super::locate::{EntryLines, Lines};
use super::request::Identity;
use crate::config::{Config, TransformSpec};
use crate::identify::{Caller, PolicyId, Uid};
use crate::mint::TokenHttp;
use crate::policy::{Admission, AllowRules, MatchInput, RuleRef};
use crate::proxy::runtime::{Profile, Profiles};
use crate::secrets::SecretRegistry;

/// A config ready to judge requests without contacting anything.
pub struct Evaluator {
    /// The config file as given (for `file:line`).
    pub file: String,
    pub cfg: Config,
    profiles: Profiles,
    /// Per profile (0: top level, i + 1: `intercept.policies[i]`): each allowlist entry's
    /// index in its `transforms` list and its compiled rules.
    gates: Vec<Vec<(usize, AllowRules)>>,
    lines: Lines,
}

/// Whose profile judges, as `--identity` (or an audit record) selected it.
#[derive(Debug, Clone)]
pub struct Selected {
    /// 0: the top-level `transforms`; i + 1: `intercept.policies[i]`.
    pub profile: usize,
    /// `transforms` or `intercept.policies[0] (ci)`.
    pub label: String,
    /// The identity is in `intercept.deny` (`intercept.deny.users`): no network at all.
    pub denied: Option<String>,
    pub caller: Caller,
}

/// What decided: a transform entry, and for an allowlist the rule that matched (none: no rule
/// matched).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decider {
    /// `transforms[0]`, `intercept.policies[1].transforms[0]`, or `intercept.deny`.
    pub entry: String,
    pub transform: String,
    /// `domains[1]`, `cidrs[0]`, `rules[2]` (allowlist only).
    pub rule: Option<String>,
    /// `file:line` of the rule, else of the entry.
    pub location: String,
}

impl Decider {
    /// `transforms[0].config.domains[1] (allowlist) at agent.yaml:8`.
    pub fn describe(&self) -> String {
        let what = match &self.rule {
            Some(r) => format!("{}.config.{r} ({})", self.entry, self.transform),
            None if self.transform == crate::policy::ALLOWLIST => {
                format!("{} ({}: no rule matched)", self.entry, self.transform)
            }
            None => format!("{} ({})", self.entry, self.transform),
        };
        format!("{what} at {}", self.location)
    }
}

/// The allowlists' verdict on one destination, method and path.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub allowed: bool,
    /// `warn: true` (`Warned`) or `mode: learn` (`Learned`) let an unmatched request through.
    pub unmatched: Option<Admission>,
    /// The allowlist that refused, or the rule of the first allowlist that admitted; `None`
    /// without any allowlist (everything is allowed).
    pub decider: Option<Decider>,
}

impl Evaluator {
    /// Loads `path` as `run` does (IRON_* overrides included) and builds every profile sealed.
    pub fn load(path: &Path) -> Result<Self, OpsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| OpsError::Config(format!("reading {}: {e}", path.display())))?;
        let cfg = crate::config::load_str(&text, &|k| std::env::var(k).ok())
            .map_err(|e| OpsError::Config(e.to_string()))?;
        let refused = crate::check::unsupported(&cfg);
        if !refused.is_empty() {
            return Err(OpsError::Config(refused.join("\n")));
        }
        let mut secrets = SecretRegistry::default();
        let mint = Arc::new(TokenHttp::detached());
        let profiles = crate::app::build_profiles(&cfg, &mut secrets, &mint, &Arc::default())
            .map_err(|e| OpsError::Config(e.to_string()))?;
        secrets.hold_placeholders();
        let lists = std::iter::once(&cfg.transforms)
            .chain(cfg.intercept.policies.iter().map(|p| &p.transforms));
        let gates = lists
            .map(|entries| {
                entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| match &e.spec {
                        TransformSpec::Allowlist(a) => Some((i, AllowRules::new(a))),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            file: path.display().to_string(),
            lines: Lines::of(&text),
            cfg,
            profiles,
            gates,
        })
    }

    /// The profile `id` is judged by: its `intercept.policies` entry, else the top level.
    pub fn select(&self, id: Option<&Identity>) -> Result<Selected, OpsError> {
        let policies = &self.cfg.intercept.policies;
        let deny = &self.cfg.intercept.deny;
        let mut caller = Caller::default();
        let (index, denied) = match id {
            None => (None, None),
            Some(Identity::User(u)) => {
                caller.user = Some(u.clone());
                let denied = deny
                    .users
                    .contains(u)
                    .then(|| "intercept.deny.users".into());
                (policies.iter().position(|p| p.users.contains(u)), denied)
            }
            Some(Identity::Uid(n)) => {
                caller.uid = Some(Uid(*n));
                let denied = deny.uids.contains(n).then(|| "intercept.deny.uids".into());
                (policies.iter().position(|p| p.uids.contains(n)), denied)
            }
            Some(Identity::Policy(name)) => {
                let i = policies
                    .iter()
                    .position(|p| p.name.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| {
                        OpsError::Usage(format!(
                            "--identity policy:{name}: no intercept.policies entry has that name"
                        ))
                    })?;
                (Some(i), None)
            }
        };
        let profile = index.map_or(0, |i| i + 1);
        caller.policy = self.profile(profile).audit_name.clone();
        let label = match index {
            None => "transforms (top level)".to_string(),
            Some(i) => format!(
                "intercept.policies[{i}] ({}) at {}",
                policies[i].name.as_deref().unwrap_or("unnamed"),
                self.at(self.lines.policies.get(i).map_or(0, |p| p.0)),
            ),
        };
        Ok(Selected {
            profile,
            label,
            denied,
            caller,
        })
    }

    pub(super) fn profile(&self, profile: usize) -> &Arc<Profile> {
        let id = PolicyId(u32::try_from(profile).unwrap_or(u32::MAX));
        self.profiles
            .get(id)
            .unwrap_or_else(|_| self.profiles.default_profile())
    }

    /// `file:line`, or the file alone when the line is unknown.
    pub fn at(&self, line: u64) -> String {
        if line == 0 {
            self.file.clone()
        } else {
            format!("{}:{line}", self.file)
        }
    }

    /// `transforms[i]` or `intercept.policies[p].transforms[i]`.
    pub fn entry_path(profile: usize, index: usize) -> String {
        match profile.checked_sub(1) {
            None => format!("transforms[{index}]"),
            Some(p) => format!("intercept.policies[{p}].transforms[{index}]"),
        }
    }

    fn entry_lines(&self, profile: usize, index: usize) -> EntryLines {
        self.lines
            .profile(profile)
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    /// The decider for entry `index` of `profile` (and the allowlist rule that matched).
    pub fn decider(
        &self,
        profile: usize,
        index: usize,
        transform: &str,
        rule: Option<RuleRef>,
    ) -> Decider {
        let lines = self.entry_lines(profile, index);
        Decider {
            entry: Self::entry_path(profile, index),
            transform: transform.to_string(),
            rule: rule.map(RuleRef::field),
            location: self.at(rule.map_or(lines.line, |r| lines.rule(r))),
        }
    }

    /// The allowlist entries of `profile`: (index in its `transforms`, compiled rules).
    pub(super) fn gates_of(&self, profile: usize) -> &[(usize, AllowRules)] {
        self.gates.get(profile).map_or(&[][..], Vec::as_slice)
    }

    /// The allowlists of `profile` on `input`, in order, stopping at the first that refuses:
    /// a request (`requests_follow: None`), a tunnel setup (`Some(true)`) or an sni-only
    /// connection (`Some(false)`), as [`AllowRules`] judges them in the agent.
    pub fn judge(
        &self,
        profile: usize,
        input: &MatchInput<'_>,
        requests_follow: Option<bool>,
    ) -> Judgement {
        let mut first: Option<(Decider, Admission)> = None;
        for (index, rules) in self.gates_of(profile) {
            let (admission, rule) = rules.explain(input, requests_follow);
            let d = self.decider(profile, *index, crate::policy::ALLOWLIST, rule);
            if !admission.admits() {
                return Judgement {
                    allowed: false,
                    unmatched: None,
                    decider: Some(d),
                };
            }
            first.get_or_insert((d, admission));
        }
        Judgement {
            allowed: true,
            unmatched: first
                .as_ref()
                .map(|f| f.1)
                .filter(|a| *a != Admission::Allowed),
            decider: first.map(|f| f.0),
        }
    }
}
