//! Managed mode's sync loop ([`crate::managed`]): sync at once, then every poll interval
//! ±10 % or when poked; on failure retry with capped exponential backoff, logging each error.
//! Startup never waits for it. Answers are applied through the reload swap.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::reload::Reloader;
use crate::audit::AuditSink;
use crate::managed::apply::{self, Synced};
use crate::managed::backoff::{Backoff, JITTER, jitter};
use crate::managed::client::{SyncAnswer, SyncClient, SyncError};
use crate::managed::ingest::AuditLink;
use crate::managed::{ManagedError, Settings, State};
use crate::metrics::Health;
use crate::mint::TokenHttp;

/// Everything the loop needs.
pub struct Poller {
    pub client: SyncClient,
    pub reloader: Arc<Reloader>,
    pub state: Arc<State>,
    pub health: Arc<Health>,
    pub interval: Duration,
    /// The answers' ingest token and tags, applied to the audit sink.
    pub audit: AuditLink,
}

impl Poller {
    /// The loop for `settings`, calling through the agent's own HTTP client, and the state it
    /// shares with the management API.
    pub fn new(
        settings: Settings,
        http: &Arc<TokenHttp>,
        reloader: &Arc<Reloader>,
        health: &Arc<Health>,
        audit: &Arc<AuditSink>,
    ) -> (Self, Arc<State>) {
        let state = Arc::new(State::default());
        let poller = Self {
            audit: AuditLink::new(audit.clone(), &settings.url),
            client: SyncClient::new(http.clone(), &settings.url, settings.token),
            reloader: reloader.clone(),
            state: state.clone(),
            health: health.clone(),
            interval: settings.poll_interval,
        };
        (poller, state)
    }

    /// Runs until `shutdown` (Ok) or a revocation (Err).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ManagedError> {
        let mut backoff = Backoff::default();
        tracing::info!(endpoint = %self.client.endpoint(), "managed mode: syncing with the control plane");
        loop {
            let held = self.state.status().config_hash;
            let wait = match self.client.sync(&held).await {
                Ok(answer) => {
                    backoff.reset();
                    self.audit.apply(
                        answer.ingest_token.as_ref(),
                        answer.tags.as_ref(),
                        &|k: &str| std::env::var(k).ok(),
                    );
                    if let Err(e) = self.handle(answer).await {
                        tracing::warn!(error = %e, config_hash = %held, "rejecting invalid config from sync, keeping current config");
                    }
                    jitter(self.interval, JITTER)
                }
                Err(e) if e.revoked() => {
                    let e = ManagedError::Revoked(e.to_string());
                    tracing::error!(error = %e, "proxy revoked by the control plane");
                    return Err(e);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    log_failure(&e, delay, self.state.status().synced_once);
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
                _ = self.state.poked() => {
                    tracing::info!("sync requested through the management API");
                }
            }
        }
    }

    /// Applies one answer; on error nothing changed (state, hash, status).
    async fn handle(&self, answer: SyncAnswer) -> Result<(), String> {
        let first = !self.state.status().synced_once;
        if !answer.has_config() {
            if first {
                return Err("the control plane's first answer carries no config".into());
            }
            self.state
                .update(|s| s.last_sync_at = Some(crate::telemetry::now_rfc3339()));
            return Ok(());
        }
        tracing::info!(
            has_rules = answer.rules.is_some(),
            has_secrets = answer.secrets.is_some(),
            has_transforms = answer.transforms.is_some(),
            has_mcp = answer.mcp.is_some(),
            has_postgres = answer.postgres.is_some(),
            "config update received from control plane"
        );
        let synced: Synced = apply::synced(&answer).map_err(|e| e.to_string())?;
        if first && synced.transforms.is_none() {
            return Err(
                "the control plane's first answer carries no pipeline (rules, secrets or transforms)"
                    .into(),
            );
        }
        for skipped in &synced.postgres_skipped {
            let reason = apply::redact(skipped, &answer);
            tracing::warn!(reason = %reason, "skipping an invalid postgres entry from sync");
        }
        let hash = answer.config_hash.clone().unwrap_or_default();
        self.reloader
            .apply_sync(synced, hash.clone())
            .await
            .map_err(|e| apply::redact(&e.to_string(), &answer))?;
        self.state.update(|s| {
            s.config_hash = hash;
            s.synced_once = true;
            s.last_sync_at = Some(crate::telemetry::now_rfc3339());
            let full = answer.has_pipeline();
            if let Some(p) = answer.status {
                s.principal_status = Some(p);
            }
            if let Some(p) = answer.principal_id {
                s.principal_id = Some(p);
            } else if full {
                // A full answer without a principal: unassigned.
                s.principal_id = None;
            }
        });
        if first {
            self.health.synced();
            tracing::info!("first config applied from the control plane: ready");
        }
        Ok(())
    }
}

fn log_failure(e: &SyncError, retry_in: Duration, synced_once: bool) {
    let state = if synced_once {
        "serving the last synced config"
    } else {
        "not ready until a sync succeeds"
    };
    tracing::warn!(
        error = %e,
        retry_in_ms = retry_in.as_millis() as u64,
        "control plane sync failed, will retry ({state})"
    );
}
