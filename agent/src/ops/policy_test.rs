//! `iron-agent policy test`: one dry-run report per request, printed as text or JSON.

use std::net::{Ipv4Addr, SocketAddr};

use http::uri::Scheme;
use serde::Serialize;
use serde_json::Value;

use super::dry_run::{Decider, Evaluator, Judgement, Selected};
use super::request::DryRequest;
use crate::audit::Trace;
use crate::config::TlsMode;
use crate::identify::{ClientAddr, HostName};
use crate::message::body::DecodedPath;
use crate::policy::Admission;
use crate::transform::pipeline::PhaseOutcome;
use crate::transform::{Mode, RequestCx};

/// The client address a dry run uses (rules limited by `source_ip` see it).
pub const DRY_RUN_CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    /// A transform would answer itself (no upstream contact).
    Stub,
    Deny,
    Error,
}

/// One transform's part in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub entry: String,
    pub transform: String,
    /// `allow`, `reject`, `stub`, `error`, or `not_contacted` (it needed a token endpoint or
    /// an LLM, which a dry run never calls).
    pub action: String,
    /// The allowlist rule that matched, the annotations, or the error.
    pub detail: Option<String>,
    pub location: String,
}

/// The dry run of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub request: String,
    pub policy: String,
    pub decision: Decision,
    pub decided_by: Option<Decider>,
    pub transforms: Vec<Step>,
    /// Names (source env var, file, secret id) of the secrets that would be injected or
    /// swapped in; never a value.
    pub secrets: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    fn new(req: &DryRequest, sel: &Selected) -> Self {
        Self {
            request: req.describe(),
            policy: sel.label.clone(),
            decision: Decision::Error,
            decided_by: None,
            transforms: Vec::new(),
            secrets: Vec::new(),
            notes: Vec::new(),
        }
    }
}

impl Evaluator {
    /// Runs `req` through `sel`'s profile without contacting anything.
    pub async fn test(&self, req: &DryRequest, sel: &Selected) -> Report {
        let mut report = Report::new(req, sel);
        if let Some(field) = &sel.denied {
            report.decision = Decision::Deny;
            report.decided_by = Some(Decider {
                entry: field.clone(),
                transform: "intercept".into(),
                rule: None,
                location: self.file.clone(),
            });
            report
                .notes
                .push("a denied identity has no network at all".into());
            return report;
        }
        let https = req.uri.scheme() == Some(&Scheme::HTTPS);
        let mut http_req = http::Request::new(crate::transform::body::empty());
        *http_req.method_mut() = req.method.clone();
        *http_req.uri_mut() = req.uri.clone();
        *http_req.headers_mut() = req.headers.clone();
        let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
        let host = req.uri.host().map(str::to_string);
        let target =
            match crate::identify::identify(&http_req, scheme, host.as_deref().filter(|_| https)) {
                Ok(t) => t,
                Err((refusal, _)) => {
                    report
                        .notes
                        .push(format!("refused before any transform: {refusal:?}"));
                    report.decision = Decision::Deny;
                    return report;
                }
            };
        if https && self.cfg.tls.mode == TlsMode::SniOnly {
            self.sni_only(&target.host, sel, &mut report);
            return report;
        }
        http_req
            .extensions_mut()
            .insert(DecodedPath(target.decoded_path.clone()));
        let mode = Mode::Mitm;
        let mut cx = RequestCx::new(target.host.clone(), ClientAddr(DRY_RUN_CLIENT), mode);
        cx.sni = host.filter(|_| https);
        cx.caller = sel.caller.clone();
        let profile = self.profile(sel.profile);
        let mut traces = Vec::new();
        let (end, cut) = profile
            .pipeline
            .dry_run_request(&mut cx, &mut http_req, &mut traces)
            .await;
        let judged = self.judge(sel.profile, &cx.match_input(&http_req), None);
        self.fill_steps(sel.profile, &traces, &cut, &cx, &http_req, &mut report);
        report.secrets = secret_names(&traces);
        self.conclude(sel.profile, end, judged, traces.len(), &mut report);
        if cut.iter().any(|c| *c) {
            report.notes.push(
                "a transform needed a token endpoint or an LLM: not contacted in a dry run, so its own verdict is unknown".into(),
            );
        }
        report
    }

    /// The decision from the pipeline's end and the allowlist's verdict.
    fn conclude(
        &self,
        profile: usize,
        end: PhaseOutcome,
        judged: Judgement,
        steps: usize,
        report: &mut Report,
    ) {
        let last = steps.saturating_sub(1);
        let by_last = |r: &Report| {
            r.transforms
                .get(last)
                .map(|s| self.step_decider(profile, last, s))
        };
        match end {
            PhaseOutcome::Forward => {
                report.decision = Decision::Allow;
                report.decided_by = judged.decider;
                let why = match judged.unmatched {
                    Some(Admission::Learned) => Some("`mode: learn`"),
                    Some(Admission::Warned) => Some("`warn: true`"),
                    _ => None,
                };
                if let Some(why) = why {
                    report.notes.push(format!(
                        "no rule matched: allowed only because the allowlist has {why}"
                    ));
                }
                if self.gates_empty(profile) {
                    report
                        .notes
                        .push("no allowlist: every destination is allowed".into());
                }
            }
            PhaseOutcome::Reject { .. } => {
                report.decision = Decision::Deny;
                report.decided_by = by_last(report);
            }
            PhaseOutcome::Stub { .. } => {
                report.decision = Decision::Stub;
                report.decided_by = by_last(report);
            }
            PhaseOutcome::Error { .. } => {
                report.decision = Decision::Error;
                report.decided_by = by_last(report);
            }
        }
    }

    fn gates_empty(&self, profile: usize) -> bool {
        self.profile(profile).policy.allows_everything()
    }

    fn step_decider(&self, profile: usize, index: usize, step: &Step) -> Decider {
        let mut d = self.decider(profile, index, &step.transform, None);
        if step.transform == crate::policy::ALLOWLIST {
            d.rule = None;
        }
        d
    }

    /// One step per trace; allowlists name their matching rule.
    fn fill_steps(
        &self,
        profile: usize,
        traces: &[Trace],
        cut: &[bool],
        cx: &RequestCx,
        req: &crate::transform::ProxyRequest,
        report: &mut Report,
    ) {
        let input = cx.match_input(req);
        for (i, t) in traces.iter().enumerate() {
            let mut d = self.decider(profile, i, &t.name, None);
            let detail = if t.name == crate::policy::ALLOWLIST {
                let one = self
                    .gates_of(profile)
                    .iter()
                    .find(|(idx, _)| *idx == i)
                    .map(|(_, rules)| rules.explain(&input, None));
                match one {
                    Some((_, Some(rule))) => {
                        d = self.decider(profile, i, &t.name, Some(rule));
                        Some(format!("{} matched", rule.field()))
                    }
                    _ => Some("no rule matched".to_string()),
                }
            } else if let Some(e) = &t.error {
                Some(e.clone())
            } else if t.annotations.is_empty() {
                None
            } else {
                serde_json::to_string(&t.annotations).ok()
            };
            report.transforms.push(Step {
                entry: d.entry,
                transform: t.name.clone(),
                action: if cut.get(i).copied().unwrap_or(false) {
                    "not_contacted".into()
                } else {
                    t.action.as_str().into()
                },
                detail,
                location: d.location,
            });
        }
    }

    /// `tls.mode: sni-only`: HTTPS is judged by the server name alone, no transform runs.
    fn sni_only(&self, host: &HostName, sel: &Selected, report: &mut Report) {
        let input = crate::policy::MatchInput {
            host,
            method: "",
            path: "",
            dest_ip: None,
            client_ip: Some(DRY_RUN_CLIENT.ip()),
        };
        let j = self.judge(sel.profile, &input, Some(false));
        report.decision = if j.allowed {
            Decision::Allow
        } else {
            Decision::Deny
        };
        report.decided_by = j.decider;
        report.notes.push(
            "tls.mode: sni-only: HTTPS is judged by the server name only (no method, path or transform)".into(),
        );
    }
}

/// Names of the secrets and credentials the traces say were injected or swapped in.
pub fn secret_names(traces: &[Trace]) -> Vec<String> {
    let mut out = Vec::new();
    for t in traces {
        for (k, v) in &t.annotations {
            if k == "injected" || k == "swapped" {
                collect_names(v, &mut out);
            }
        }
    }
    out
}

/// Every `secret` / `credential` string under `v`, once each.
pub fn collect_names(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_names(i, out)),
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if k == "secret" || k == "credential" => {
                        if !out.contains(s) {
                            out.push(s.clone());
                        }
                    }
                    other => collect_names(other, out),
                }
            }
        }
        _ => {}
    }
}

/// The text form: one block per request.
pub fn render_text(r: &Report) -> String {
    let mut s = format!("{}\n  policy:   {}\n", r.request, r.policy);
    let decision = match r.decision {
        Decision::Allow => "allow",
        Decision::Stub => "stub (a transform answers; nothing is forwarded)",
        Decision::Deny => "deny",
        Decision::Error => "error",
    };
    s.push_str(&format!("  decision: {decision}\n"));
    match &r.decided_by {
        Some(d) => s.push_str(&format!("  rule:     {}\n", d.describe())),
        None => s.push_str("  rule:     none\n"),
    }
    if !r.transforms.is_empty() {
        s.push_str("  transforms:\n");
    }
    for t in &r.transforms {
        s.push_str(&format!("    {} {}: {}", t.entry, t.transform, t.action));
        if let Some(d) = &t.detail {
            s.push_str(&format!(" ({d})"));
        }
        s.push_str(&format!(" at {}\n", t.location));
    }
    let secrets = if r.secrets.is_empty() {
        "none".to_string()
    } else {
        r.secrets.join(", ")
    };
    s.push_str(&format!("  secrets:  {secrets}\n"));
    for n in &r.notes {
        s.push_str(&format!("  note:     {n}\n"));
    }
    s
}
