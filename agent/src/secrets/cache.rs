//! Cached secrets: resolved at startup, refreshed in the background on `ttl`, read without I/O
//! on the request path.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::aws::AwsEnv;
use super::{SecretError, SecretResolver, SecretValue, json_key, resolver_for};
use crate::config::transforms::SecretSource;
use crate::metrics::Metrics;

/// What every secret holds in a dry run ([`SecretRegistry::hold_placeholders`]).
pub const DRY_RUN_VALUE: &str = "iron-agent-dry-run-placeholder";

/// A single fetch may take this long before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

struct State {
    value: Option<SecretValue>,
    error: Option<SecretError>,
}

/// One configured secret source with its cached value.
pub struct Secret {
    display: String,
    kind: &'static str,
    json_key: Option<String>,
    resolver: Arc<dyn SecretResolver>,
    ttl: Option<Duration>,
    failure_ttl: Duration,
    state: ArcSwap<State>,
    /// Where failed fetches are counted (the registry's, so the agent's).
    metrics: Arc<Metrics>,
}

impl Secret {
    /// Failed fetches are counted into `metrics`.
    pub fn new(
        src: &SecretSource,
        aws: &AwsEnv,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SecretError> {
        Ok(Self::with_resolver(src, resolver_for(src, aws)?, metrics))
    }

    /// As [`Secret::new`] with an explicit resolver (tests, control-plane values).
    pub fn with_resolver(
        src: &SecretSource,
        resolver: Arc<dyn SecretResolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            display: src.display_name().to_string(),
            kind: src.kind(),
            json_key: src.json_key().map(str::to_string),
            resolver,
            ttl: src.ttl().filter(|d| !d.is_zero()),
            failure_ttl: src.failure_ttl(),
            state: ArcSwap::from_pointee(State {
                value: None,
                error: Some(SecretError::Pending),
            }),
            metrics,
        }
    }

    /// The name shown in annotations and logs: env var, file path, secret id, reference.
    pub fn display_name(&self) -> &str {
        &self.display
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The cached value, or why there is none. Never blocks.
    pub fn current(&self) -> Result<SecretValue, SecretError> {
        let s = self.state.load();
        match (&s.value, &s.error) {
            (Some(v), _) => Ok(v.clone()),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(SecretError::Pending),
        }
    }

    /// Holds `value` without fetching anything (a dry run: `iron-agent policy test`).
    fn hold(&self, value: SecretValue) {
        self.state.store(Arc::new(State {
            value: Some(value),
            error: None,
        }));
    }

    /// Fetches now. On failure a previously good value is kept (and served).
    pub async fn refresh(&self) -> Result<(), SecretError> {
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, self.resolver.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(SecretError::Remote {
                source_name: self.display.clone(),
                reason: "timed out".into(),
            }),
        };
        let fetched = fetched.and_then(|raw| match &self.json_key {
            Some(k) => json_key::extract(&raw, k),
            None => Ok(raw),
        });
        match fetched {
            Ok(v) => {
                self.state.store(Arc::new(State {
                    value: Some(v),
                    error: None,
                }));
                Ok(())
            }
            Err(e) => {
                self.metrics.secret_refresh_failed(self.kind);
                let old = self.state.load();
                if old.value.is_some() {
                    tracing::warn!(source = %self.display, kind = self.kind, error = %e, "failed to refresh secret, serving stale value");
                } else {
                    tracing::warn!(source = %self.display, kind = self.kind, error = %e, "failed to fetch secret");
                }
                self.state.store(Arc::new(State {
                    value: old.value.clone(),
                    error: Some(e.clone()),
                }));
                Err(e)
            }
        }
    }

    /// When to fetch again: `ttl` after a success; `failure_ttl` while nothing was ever
    /// fetched; `ttl/2` after a failed refresh of a good value. `None` = never.
    fn next_delay(&self, last: &Result<(), SecretError>) -> Option<Duration> {
        let has_value = self.state.load().value.is_some();
        match (last, self.ttl) {
            (Ok(()), ttl) => ttl,
            (Err(_), _) if !has_value => Some(self.failure_ttl),
            (Err(_), Some(ttl)) => Some(ttl / 2),
            (Err(_), None) => Some(self.failure_ttl),
        }
    }
}

/// Every secret a pipeline uses; resolves them at startup and keeps them fresh.
/// `SecretRegistry::default()` counts failed fetches into a registry of its own (check-config,
/// tests); the agent uses [`SecretRegistry::new`] with its metrics.
#[derive(Default)]
pub struct SecretRegistry {
    secrets: Vec<Arc<Secret>>,
    aws: AwsEnv,
    metrics: Arc<Metrics>,
}

impl SecretRegistry {
    /// A registry whose secrets count their failed fetches into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    pub fn register(&mut self, src: &SecretSource) -> Result<Arc<Secret>, SecretError> {
        let s = Arc::new(Secret::new(src, &self.aws, self.metrics.clone())?);
        self.secrets.push(s.clone());
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Resolves every secret once, concurrently. Failures are logged and retried in the
    /// background; requests that need a missing secret fail closed or carry an annotation.
    pub async fn resolve_all(&self) {
        let futs = self.secrets.iter().map(|s| s.refresh());
        let _ = futures_util::future::join_all(futs).await;
    }

    /// A dry run: every secret holds [`DRY_RUN_VALUE`] instead of its real value, so the
    /// transforms show where a value would go while no secret store is contacted and no real
    /// value is ever read.
    pub fn hold_placeholders(&self) {
        for s in &self.secrets {
            s.hold(SecretValue::new(DRY_RUN_VALUE));
        }
    }

    /// Background refresh loops, one per secret that needs one, until `shutdown`.
    pub fn spawn_refreshers(&self, shutdown: CancellationToken) {
        for s in &self.secrets {
            let s = s.clone();
            let shutdown = shutdown.clone();
            let initial = if s.current().is_ok() {
                Ok(())
            } else {
                Err(SecretError::Pending)
            };
            let Some(mut delay) = s.next_delay(&initial) else {
                continue;
            };
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    let r = s.refresh().await;
                    match s.next_delay(&r) {
                        Some(d) => delay = d,
                        None => return,
                    }
                }
            });
        }
    }
}
