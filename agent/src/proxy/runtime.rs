//! What every connection and request needs, built once at startup by `app`.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::ConnInfo;
use super::websocket;
use crate::audit::AuditSink;
use crate::config::TransformEntry;
use crate::identify::{ConnIdentifier, PeerRefusal, PolicyId, UserNames};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::resolve::Resolver;
use crate::tls::LeafCache;
use crate::transform::{BuildContext, BuildError, Mode, Pipeline, build_pipeline};
use crate::upstream::{Connector, UpstreamClient};

/// Everything a request needs, built once at startup.
pub struct Runtime {
    /// The identity profiles. Read once per request or connection (`load`), so a request
    /// always sees one consistent set; held in an `ArcSwap` so that a reload
    /// (`app::reload`) replaces it atomically while in-flight requests keep the one they read.
    pub profiles: ArcSwap<Profiles>,
    /// The connection-level identify step (original destination, peer uid, profile).
    pub identify: ConnIdentifier,
    /// `user` names for audit records.
    pub users: Arc<dyn UserNames>,
    pub resolver: Arc<Resolver>,
    pub upstream: UpstreamClient,
    /// Raw dials (sni-only passthrough), with the same deny-CIDR checks as `upstream`.
    pub connector: Connector,
    pub audit: Arc<AuditSink>,
    /// The agent's metrics registry (the same one `audit` counts into).
    pub metrics: Arc<Metrics>,
    /// Present in MITM mode.
    pub leaf_cache: Option<Arc<LeafCache>>,
    pub mode: Mode,
    pub request_body_limit: Option<u64>,
    pub response_body_limit: Option<u64>,
    /// Open WebSockets (closed and audited at shutdown).
    pub websockets: websocket::Relays,
    /// `proxy.max_connections` and `proxy.max_connections_per_client` (fixed at startup).
    pub conn_limits: std::sync::Arc<super::limits::ConnLimits>,
}

impl Runtime {
    /// The profile judging `conn`'s requests, or why the connection is refused whatever it
    /// asks for (a `deny` or unidentified peer, or a policy id the config in force lacks).
    pub fn profile_for(&self, conn: &ConnInfo) -> Result<Arc<Profile>, PeerRefusal> {
        if let Some(r) = conn.identity.refused {
            return Err(r);
        }
        self.profiles.load().get(conn.policy_id()).cloned()
    }
}

/// One identity profile: the top-level `transforms` list, or one `intercept.policies` entry.
pub struct Profile {
    /// The audit record's `policy`: `None` for the top-level list, the entry's name (or `""`)
    /// for an `intercept.policies` entry.
    pub audit_name: Option<String>,
    /// The connection-level decision (its `allowlist` entries).
    pub policy: Policy,
    /// The request and response transforms.
    pub pipeline: Pipeline,
    /// MCP interception and gateway (`mcp`, `mcp_gateway`; shared by every profile of one
    /// config), `None` when no server is set. Here so a request sees the MCP policy of the
    /// same config generation as its pipeline.
    pub mcp: Option<Arc<crate::mcp::Mcp>>,
    /// `intercept.policies[i].budget`, shared by every connection this profile judges.
    pub budget: Option<Arc<crate::policy::budget::Budget>>,
}

impl Profile {
    /// Builds the policy and the pipeline of one `transforms:` list, registering its secrets.
    pub fn build(
        audit_name: Option<String>,
        entries: &[TransformEntry],
        cx: &mut BuildContext<'_>,
    ) -> Result<Self, Vec<BuildError>> {
        Ok(Self {
            audit_name,
            policy: Policy::from_transforms(entries),
            pipeline: build_pipeline(entries, cx)?,
            mcp: None,
            budget: None,
        })
    }
}

/// The top-level profile plus one per `intercept.policies` entry (policy id = index + 1).
pub struct Profiles {
    default: Arc<Profile>,
    policies: Vec<Arc<Profile>>,
    /// Managed mode before the first sync: every connection is refused (503).
    not_ready: bool,
}

impl Profiles {
    pub fn new(default: Profile, policies: Vec<Profile>) -> Self {
        Self {
            default: Arc::new(default),
            policies: policies.into_iter().map(Arc::new).collect(),
            not_ready: false,
        }
    }

    /// Managed mode until the first sync is applied: no policy yet, so nothing is judged;
    /// every connection gets [`PeerRefusal::NotReady`].
    pub fn not_ready() -> Self {
        Self {
            not_ready: true,
            ..Self::new(
                Profile {
                    audit_name: None,
                    policy: Policy::default(),
                    pipeline: Pipeline::default(),
                    mcp: None,
                    budget: None,
                },
                Vec::new(),
            )
        }
    }

    /// The profile for a policy id reported by the kernel: 0 is the top-level one. An id no
    /// profile has (its `intercept.policies` entry was removed by a reload after the kernel
    /// recorded the socket) is refused, never judged by the top-level pipeline.
    pub fn get(&self, id: PolicyId) -> Result<&Arc<Profile>, PeerRefusal> {
        if self.not_ready {
            return Err(PeerRefusal::NotReady);
        }
        match id.index() {
            None => Ok(&self.default),
            Some(i) => self.policies.get(i).ok_or(PeerRefusal::UnknownPolicy),
        }
    }

    /// The top-level profile.
    pub fn default_profile(&self) -> &Arc<Profile> {
        &self.default
    }

    /// Whether any profile could allow a request to `host` (DNS in eBPF mode answers only
    /// names some profile may allow).
    pub fn may_allow_host(&self, host: &str) -> bool {
        !self.not_ready
            && std::iter::once(&self.default)
                .chain(&self.policies)
                .any(|p| p.policy.may_allow_host(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: Option<&str>) -> Profile {
        Profile {
            audit_name: name.map(str::to_string),
            policy: Policy::default(),
            pipeline: Pipeline::default(),
            mcp: None,
            budget: None,
        }
    }

    #[test]
    fn an_unknown_policy_id_is_refused_not_given_the_top_level_profile() {
        let profiles = Profiles::new(profile(None), vec![profile(Some("ci"))]);
        let name = |id| profiles.get(id).map(|p| p.audit_name.clone());
        assert_eq!(name(PolicyId::DEFAULT), Ok(None));
        assert_eq!(name(PolicyId(1)), Ok(Some("ci".to_string())));
        // Policy 2 was dropped by a reload after the kernel recorded a socket with it.
        assert_eq!(name(PolicyId(2)), Err(PeerRefusal::UnknownPolicy));
        assert_eq!(name(PolicyId(u32::MAX)), Err(PeerRefusal::UnknownPolicy));
    }

    #[test]
    fn before_the_first_sync_every_connection_is_refused_as_not_ready() {
        let profiles = Profiles::not_ready();
        for id in [PolicyId::DEFAULT, PolicyId(1)] {
            assert_eq!(
                profiles.get(id).map(|p| p.audit_name.clone()),
                Err(PeerRefusal::NotReady)
            );
        }
        assert!(!profiles.may_allow_host("anything.example"));
    }
}
