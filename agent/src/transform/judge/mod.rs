//! `judge` (§12.12): asks an LLM whether a matching request may go on. It can only reject: an
//! ALLOW continues to the next transform, a DENY answers 403, and every failure (LLM error,
//! timeout, malformed answer, open breaker, unreadable key) applies `fallback` (`deny` → 403,
//! `skip` → continue). Requests its `rules` do not match are untouched: no call, no annotation.
//!
//! Per request: rules → breaker ([`breaker`]) → body and envelope ([`envelope`]) → one slot of
//! the instance's semaphore → the provider call under `timeout` ([`provider`]) → the answer
//! parsed ([`decision`]). Annotations (`judge.*`) never carry the API key.

mod breaker;
mod decision;
mod envelope;
mod provider;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::transforms::source::{EnvSource, SecretSource};
use crate::config::transforms::{JudgeConfig, JudgeFallback};
use crate::policy::RuleSet;
use crate::transform::body::buffer_request;
use crate::transform::build::{Build, BuildContext, BuildProblem, TransformBuildError};
use crate::transform::{ProxyRequest, RequestCx, Transform, TransformError, Verdict};
use breaker::Breaker;
use provider::{CallError, Provider, cap};

/// `judge.reason` and `judge.raw_output` caps (docs).
const MAX_REASON: usize = 512;
const MAX_RAW_OUTPUT: usize = 2048;

pub struct Judge {
    name: String,
    rules: RuleSet,
    fallback: JudgeFallback,
    timeout: Duration,
    slots: Semaphore,
    breaker: Breaker,
    provider: Provider,
    system: String,
}

impl Build for Judge {
    type Config = JudgeConfig;

    fn build(cfg: &JudgeConfig, cx: &mut BuildContext<'_>) -> Result<Self, TransformBuildError> {
        let p = cfg
            .provider
            .as_ref()
            .ok_or_else(|| TransformBuildError::invalid("provider", "is required"))?;
        let kind = p
            .kind
            .ok_or_else(|| TransformBuildError::invalid("provider.type", "is required"))?;
        let (field, source) = match &p.api_key {
            Some(src) => ("provider.api_key", src.clone()),
            None => (
                "provider.api_key_env",
                SecretSource::Env(EnvSource {
                    var: p.api_key_env.clone(),
                    json_key: None,
                }),
            ),
        };
        let key = cx
            .secrets
            .register(&source)
            .map_err(|e| TransformBuildError::new(field, BuildProblem::Secret(e)))?;
        Ok(Self {
            name: cfg.name.clone(),
            rules: RuleSet::from_configs(&cfg.rules),
            fallback: cfg.fallback,
            timeout: cfg.timeout.0,
            slots: Semaphore::new(cfg.max_concurrent.max(1) as usize),
            breaker: Breaker::new(
                cfg.circuit_breaker.consecutive_failures,
                cfg.circuit_breaker.cooldown.0,
            ),
            provider: Provider::new(p, kind, key, cx.mint.clone()),
            system: decision::system_prompt(&cfg.prompt),
        })
    }
}

/// How one evaluation ended.
enum Outcome {
    Decided {
        allow: bool,
        reason: String,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    },
    Failed {
        reason: String,
        raw_output: Option<String>,
        tripped: bool,
    },
}

impl Outcome {
    fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            raw_output: None,
            tripped: false,
        }
    }
}

impl Judge {
    /// Everything after the rules matched; `Err` only for a body over the buffer limit (413,
    /// decision 3), which no fallback may turn into a forward.
    async fn evaluate(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Outcome, TransformError> {
        let Some(ticket) = self.breaker.admit() else {
            return Ok(Outcome::Failed {
                reason: "circuit breaker open".into(),
                raw_output: None,
                tripped: true,
            });
        };
        let body = match buffer_request(req, cx.request_body_limit).await {
            Ok(b) => b,
            Err(e @ TransformError::BodyTooLarge { .. }) => return Err(e),
            Err(e) => return Ok(Outcome::failed(format!("reading request body: {e}"))),
        };
        let user = match serde_json::to_string(&self.envelope(cx, req, &body)) {
            Ok(u) => u,
            Err(e) => return Ok(Outcome::failed(format!("building envelope: {e}"))),
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return Ok(Outcome::failed("judge is shutting down"));
        };
        let reply =
            match tokio::time::timeout(self.timeout, self.provider.call(&self.system, &user)).await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e @ CallError::Key(_))) => return Ok(Outcome::failed(e.to_string())),
                Ok(Err(e)) => {
                    ticket.failure();
                    return Ok(Outcome::failed(e.to_string()));
                }
                Err(_) => {
                    ticket.failure();
                    return Ok(Outcome::failed(format!(
                        "adapter error: no answer within {:?}",
                        self.timeout
                    )));
                }
            };
        match decision::parse(&reply.text) {
            Ok(d) => {
                ticket.success();
                Ok(Outcome::Decided {
                    allow: d.allow,
                    reason: d.reason,
                    input_tokens: reply.input_tokens,
                    output_tokens: reply.output_tokens,
                })
            }
            Err(e) => {
                ticket.failure();
                Ok(Outcome::Failed {
                    reason: format!("parsing decision: {e}"),
                    raw_output: Some(cap(&reply.text, MAX_RAW_OUTPUT)),
                    tripped: false,
                })
            }
        }
    }

    fn envelope(&self, cx: &RequestCx, req: &ProxyRequest, body: &[u8]) -> envelope::Envelope {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| cx.host.to_string());
        let url = req.uri().path_and_query().map_or("/", |p| p.as_str());
        envelope::build(&envelope::Input {
            method: req.method().as_str(),
            url,
            host: &host,
            headers: req.headers(),
            body,
        })
    }

    /// Writes the `judge.*` annotations and returns the verdict.
    fn conclude(&self, cx: &mut RequestCx, outcome: Outcome) -> Verdict {
        match outcome {
            Outcome::Decided {
                allow,
                reason,
                input_tokens,
                output_tokens,
            } => {
                cx.annotate("judge.decision", if allow { "ALLOW" } else { "DENY" });
                cx.annotate("judge.reason", cap(&reason, MAX_REASON));
                if let Some(n) = input_tokens {
                    cx.annotate("judge.input_tokens", n);
                }
                if let Some(n) = output_tokens {
                    cx.annotate("judge.output_tokens", n);
                }
                if allow {
                    Verdict::Continue
                } else {
                    Verdict::Reject(None)
                }
            }
            Outcome::Failed {
                reason,
                raw_output,
                tripped,
            } => {
                let (applied, decision, verdict) = match self.fallback {
                    JudgeFallback::Deny => ("deny", "FALLBACK_DENY", Verdict::Reject(None)),
                    JudgeFallback::Skip => ("skip", "FALLBACK_ALLOW", Verdict::Continue),
                };
                cx.annotate("judge.fallback_applied", applied);
                cx.annotate("judge.decision", decision);
                cx.annotate("judge.reason", cap(&reason, MAX_REASON));
                if tripped {
                    cx.annotate("judge.circuit_breaker_tripped", true);
                }
                if let Some(raw) = raw_output {
                    cx.annotate("judge.raw_output", raw);
                }
                verdict
            }
        }
    }
}

#[async_trait]
impl Transform for Judge {
    /// The instance name: it labels traces and `rejected_by`, as in iron-proxy.
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(
        &self,
        cx: &mut RequestCx,
        req: &mut ProxyRequest,
    ) -> Result<Verdict, TransformError> {
        if !self.rules.matches(&cx.match_input(req)) {
            return Ok(Verdict::Continue);
        }
        let started = Instant::now();
        cx.annotate("judge.instance", self.name.clone());
        cx.annotate("judge.model", self.provider.model().to_string());
        let outcome = self.evaluate(cx, req).await?;
        let verdict = self.conclude(cx, outcome);
        let ms = started.elapsed().as_micros() as f64 / 1000.0;
        cx.annotate("judge.duration_ms", Value::from(ms));
        Ok(verdict)
    }
}
