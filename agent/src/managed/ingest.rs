//! Audit towards the control plane (iron-proxy §17): a sync answer's `ingest_token` turns on
//! OTEL export of the audit records to the control plane's logs endpoint with that token as
//! the bearer, and its `tags` go into every audit record and into the OTEL resource.
//!
//! Endpoint: `{control plane URL}/v1/logs` (iron-control's receiver), or iron-proxy's
//! `https://ingest.iron.sh/v1/logs` with the default control plane; `OTEL_EXPORTER_OTLP_*`
//! variables override the endpoint, protocol and headers. Unlike iron-proxy (initial sync
//! only), a later answer with another token or other tags restarts the export with them; a
//! field an answer leaves out keeps what is in force. The export keeps its policy: the request
//! path only offers records to a bounded queue.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::audit::AuditSink;
use crate::audit::otel::{OtelExport, settings};
use crate::secrets::SecretValue;

/// iron-proxy's ingest endpoint, used with its default control plane.
pub const DEFAULT_INGEST_ENDPOINT: &str = "https://ingest.iron.sh/v1/logs";
/// How long a replaced exporter may take to flush its queue (in the background).
const REPLACED_FLUSH: Duration = Duration::from_secs(5);

#[derive(Default, PartialEq, Eq)]
struct InForce {
    token: Option<SecretValue>,
    tags: Option<Vec<String>>,
}

pub struct AuditLink {
    sink: Arc<AuditSink>,
    endpoint: String,
    in_force: Mutex<InForce>,
}

impl AuditLink {
    pub fn new(sink: Arc<AuditSink>, control_plane_url: &str) -> Self {
        let url = control_plane_url.trim_end_matches('/');
        let endpoint = if url == super::DEFAULT_URL {
            DEFAULT_INGEST_ENDPOINT.to_string()
        } else {
            format!("{url}/v1/logs")
        };
        Self {
            sink,
            endpoint,
            in_force: Mutex::default(),
        }
    }

    /// The logs endpoint an ingest token exports to when no `OTEL_*` variable names one.
    pub fn default_endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Applies an answer's token and tags (absent: unchanged). Errors are logged; the export
    /// in force then stays as it was.
    pub fn apply(
        &self,
        token: Option<&SecretValue>,
        tags: Option<&Vec<String>>,
        env: settings::Env<'_>,
    ) {
        let mut cur = self.in_force.lock().unwrap_or_else(PoisonError::into_inner);
        let next = InForce {
            token: token.or(cur.token.as_ref()).cloned(),
            tags: tags.or(cur.tags.as_ref()).cloned(),
        };
        if next == *cur {
            return;
        }
        if next.tags != cur.tags {
            self.sink.set_tags(next.tags.clone());
        }
        let settings = match &next.token {
            Some(t) => settings::for_ingest(env, &self.endpoint, t.clone()).map(Some),
            None => settings::from_env(env),
        };
        let started = settings.and_then(|s| match s {
            Some(mut s) => {
                s.tags = next.tags.clone().unwrap_or_default();
                OtelExport::start(&s, self.sink.metrics()).map(Some)
            }
            None => Ok(None),
        });
        match started {
            Ok(Some(export)) => {
                if next.token.is_some() && cur.token.is_none() {
                    tracing::info!(endpoint = %settings::shown_endpoint(&self.endpoint), "audit export to the control plane enabled (ingest token from sync)");
                }
                if let Some(old) = self.sink.replace_otel(Some(export)) {
                    tokio::task::spawn_blocking(move || old.shutdown(REPLACED_FLUSH));
                }
            }
            // No export configured and no token: tags only.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "audit export with the control plane's ingest token could not start; keeping the export in force");
            }
        }
        *cur = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_follows_the_control_plane() {
        let sink = Arc::new(AuditSink::discard());
        let l = AuditLink::new(sink.clone(), "http://127.0.0.1:8090/");
        assert_eq!(l.default_endpoint(), "http://127.0.0.1:8090/v1/logs");
        let l = AuditLink::new(sink, super::super::DEFAULT_URL);
        assert_eq!(l.default_endpoint(), DEFAULT_INGEST_ENDPOINT);
    }

    #[tokio::test]
    async fn a_token_starts_export_and_absent_fields_keep_what_is_in_force() {
        let sink = Arc::new(AuditSink::discard());
        let l = AuditLink::new(sink.clone(), "http://127.0.0.1:9");
        let none = |_: &str| None;
        let tags = vec!["env:prod".to_string()];
        l.apply(None, Some(&tags), &none);
        assert!(!sink.exporting(), "tags alone start no export");
        let token = SecretValue::new("iing_x");
        l.apply(Some(&token), None, &none);
        assert!(sink.exporting());
        assert_eq!(
            l.in_force.lock().unwrap().tags.as_deref(),
            Some(&tags[..]),
            "an answer without tags keeps them"
        );
        sink.close_export(Duration::from_secs(1));
    }
}
