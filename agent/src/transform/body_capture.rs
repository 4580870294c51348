//! `body_capture`: records request bodies (up to its own cap) on the audit record. Observation
//! only: it never rejects — except that a body larger than `max_request_body_bytes` cannot be
//! read without truncating what goes upstream, which is a 413 (our decision 3).

use async_trait::async_trait;
use http_body::Body as _;

use crate::audit::record::BodyCapture as Captured;
use crate::config::transforms::BodyCaptureConfig;
use crate::policy::RuleSet;
use crate::transform::build::{Build, BuildContext, TransformBuildError};
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict, body};

pub struct BodyCapture {
    cap: usize,
    /// Empty = never captures (iron-proxy compatible).
    rules: RuleSet,
}

impl BodyCapture {
    pub fn new(cfg: &BodyCaptureConfig) -> Self {
        Self {
            cap: usize::try_from(cfg.capture_limit()).unwrap_or(usize::MAX),
            rules: RuleSet::from_configs(&cfg.rules),
        }
    }
}

impl Build for BodyCapture {
    type Config = BodyCaptureConfig;

    fn build(
        cfg: &BodyCaptureConfig,
        _: &mut BuildContext<'_>,
    ) -> Result<Self, TransformBuildError> {
        Ok(Self::new(cfg))
    }
}

#[async_trait]
impl Transform for BodyCapture {
    fn name(&self) -> &str {
        "body_capture"
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        let applies = !self.rules.is_empty() && self.rules.matches(&cx.match_input(req));
        if !applies || req.body().is_end_stream() {
            return Ok(Verdict::Continue);
        }
        let limit = cx.request_body_limit;
        let read = body::buffer_request(req, limit).await;
        let bytes = match read {
            Ok(b) => b,
            Err(TransformError::BodyTooLarge { limit }) => {
                return Err(TransformError::BodyTooLarge { limit });
            }
            Err(e) => {
                cx.annotate("body_capture_error", e.to_string());
                return Ok(Verdict::Continue);
            }
        };
        if bytes.is_empty() {
            return Ok(Verdict::Continue);
        }
        let truncated = bytes.len() > self.cap;
        let mut end = bytes.len().min(self.cap);
        // Never split a UTF-8 sequence at the cut.
        while end > 0 && end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
        cx.annotate("captured_bytes", end);
        cx.annotate("truncated", truncated);
        cx.body_capture = Some(Captured {
            request_body: text,
            request_body_truncated: truncated,
        });
        Ok(Verdict::Continue)
    }
}
