use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::BodyExt;

use super::*;
use crate::audit::AuditSink;
use crate::message::body;
use crate::upstream::ConnectError;

async fn body_text(resp: ProxyResponse) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn recorded(mut a: Answer) -> AuditRecord {
    let mut rec = AuditRecord::default();
    a.record_into(&mut rec);
    rec
}

#[tokio::test]
async fn agent_refusals_are_rejects_by_proxy_with_a_reason() {
    let cases = [
        (
            Refusal::Identify(identify::Refusal::DotSegments),
            400,
            "dot_segments",
            "path contains dot segments\n",
        ),
        (
            Refusal::Identify(identify::Refusal::SniMismatch),
            400,
            "sni_host_mismatch",
            "SNI and Host header mismatch\n",
        ),
        (
            Refusal::ConnectNotSupportedHere,
            405,
            "connect_not_supported_here",
            crate::outcome::CONNECT_HERE_BODY,
        ),
        (
            Refusal::DestinationMismatch,
            403,
            "destination_mismatch",
            "",
        ),
        (
            Refusal::TunnelProtocolUnsupported,
            403,
            "tunnel_protocol_unsupported",
            "",
        ),
    ];
    for (refusal, status, reason, text) in cases {
        let mut a = answer(Outcome::Refused(refusal));
        assert_eq!(
            (a.action, a.status),
            (Action::Reject, status),
            "{refusal:?}"
        );
        let resp = a.response.take().unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(body_text(resp).await, text);
        let rec = recorded(a);
        assert_eq!(rec.reason.as_deref(), Some(reason));
        assert_eq!(rec.rejected_by.as_deref(), Some("proxy"));
        assert!(rec.error.is_none());
    }
}

#[test]
fn a_refused_tunnel_handshake_keeps_the_status_it_sent() {
    let a = answer(Outcome::Refused(Refusal::TunnelHandshake {
        reason: "socks5_no_acceptable_method",
        status: 403,
    }));
    assert_eq!((a.action, a.status), (Action::Reject, 403));
    assert!(
        a.response.is_none(),
        "the client already got the protocol's refusal"
    );
    assert_eq!(
        recorded(a).reason.as_deref(),
        Some("socks5_no_acceptable_method")
    );
}

#[test]
fn a_head_over_the_limits_is_a_431_refusal_hyper_already_answered() {
    let a = answer(Outcome::Refused(Refusal::HeadTooLarge));
    assert_eq!((a.action, a.status), (Action::Reject, 431));
    assert!(a.response.is_none(), "hyper wrote the 431 itself");
    let rec = recorded(a);
    assert_eq!(
        rec.reason.as_deref(),
        Some("request_header_fields_too_large")
    );
    assert_eq!(rec.rejected_by.as_deref(), Some("proxy"));
}

#[tokio::test]
async fn transform_rejects_default_to_an_empty_403() {
    let mut a = answer(Outcome::Rejected {
        by: "allowlist".into(),
        phase: Phase::Request,
        response: None,
    });
    assert_eq!((a.action, a.status), (Action::Reject, 403));
    let resp = a.response.take().unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.headers()["content-length"], "0");
    assert_eq!(body_text(resp).await, "");
    let rec = recorded(a);
    assert_eq!(rec.rejected_by.as_deref(), Some("allowlist"));
    assert!(rec.reason.is_none());
}

#[test]
fn a_transform_response_keeps_its_status_in_either_phase() {
    for phase in [Phase::Request, Phase::Response] {
        let a = answer(Outcome::Rejected {
            by: "aws_auth".into(),
            phase,
            response: Some(body::respond(
                StatusCode::BAD_REQUEST,
                "application/json",
                "{}",
            )),
        });
        assert_eq!((a.action, a.status), (Action::Reject, 400));
        assert_eq!(recorded(a).rejected_by.as_deref(), Some("aws_auth"));
    }
}

#[test]
fn stubbed_by_names_request_phase_stubs_only() {
    let stub = |phase| {
        answer(Outcome::Stubbed {
            by: "oauth_token".into(),
            phase,
            response: body::respond(StatusCode::OK, "application/json", "{}"),
        })
    };
    let a = stub(Phase::Request);
    assert_eq!((a.action, a.status), (Action::Stub, 200));
    assert_eq!(recorded(a).stubbed_by.as_deref(), Some("oauth_token"));
    let a = stub(Phase::Response);
    assert_eq!(a.action, Action::Stub);
    assert!(recorded(a).stubbed_by.is_none());
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_reject_by_the_transform() {
    for (phase, text) in [
        (Phase::Request, "request body too large\n"),
        (Phase::Response, "response body too large\n"),
    ] {
        let mut a = answer(Outcome::TransformFailed {
            by: "hmac_sign".into(),
            phase,
            error: TransformError::BodyTooLarge { limit: 8 },
        });
        assert_eq!((a.action, a.status), (Action::Reject, 413));
        assert_eq!(body_text(a.response.take().unwrap()).await, text);
        let rec = recorded(a);
        assert_eq!(rec.reason.as_deref(), Some("body_too_large"));
        assert_eq!(rec.rejected_by.as_deref(), Some("hmac_sign"));
        assert!(rec.error.is_none());
    }
}

#[tokio::test]
async fn a_transform_error_is_a_502_naming_transform_and_phase() {
    let mut a = answer(Outcome::TransformFailed {
        by: "secrets".into(),
        phase: Phase::Response,
        error: TransformError::Invalid("secret value is not a valid header value"),
    });
    assert_eq!((a.action, a.status), (Action::Error, 502));
    assert_eq!(body_text(a.response.take().unwrap()).await, "bad gateway\n");
    let rec = recorded(a);
    assert_eq!(
        rec.error.as_deref(),
        Some("transform secrets response: secret value is not a valid header value")
    );
    assert!(rec.rejected_by.is_none());
}

#[test]
fn every_upstream_error_kind_is_a_502_with_the_connector_error() {
    let addr = "127.0.0.1:9".parse().unwrap();
    let errors = [
        ConnectError::Denied {
            addr,
            ip: "127.0.0.1".parse().unwrap(),
            net: "127.0.0.0/8".parse().unwrap(),
        },
        ConnectError::Dial {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        },
        ConnectError::DialTimeout { addr },
        ConnectError::NoAddresses {
            host: "nowhere.test".into(),
        },
        ConnectError::TlsTimeout {
            host: "a.test".into(),
        },
    ];
    for e in errors {
        let text = e.to_string();
        let a = answer(Outcome::Failed(Failure::Upstream(e.into())));
        assert_eq!((a.action, a.status), (Action::Error, 502), "{text}");
        assert_eq!(recorded(a).error.as_deref(), Some(text.as_str()));
    }
    let a = answer(Outcome::Failed(Failure::Upstream(
        UpstreamError::HeaderTimeout,
    )));
    assert_eq!(
        a.status, 502,
        "iron-proxy answers a header timeout with 502, not 504"
    );
    assert_eq!(
        recorded(a).error.as_deref(),
        Some("timeout awaiting response headers")
    );
}

#[test]
fn connection_level_outcomes() {
    let a = answer(Outcome::Denied { by: "allowlist" });
    assert_eq!((a.action, a.status), (Action::Reject, 403));
    assert_eq!(recorded(a).rejected_by.as_deref(), Some("allowlist"));
    let a = answer(Outcome::Opened);
    assert_eq!((a.action, a.status), (Action::Allow, 200));
    let a = answer(Outcome::Failed(Failure::NoServerName));
    assert_eq!((a.action, a.status), (Action::Error, 400));
    assert_eq!(
        recorded(a).error.as_deref(),
        Some("client hello missing sni")
    );
    let a = answer(Outcome::Relayed { status: 101 });
    assert_eq!((a.action, a.status), (Action::Allow, 101));
    let a = answer(Outcome::ClientCancel { status: 101 });
    assert_eq!((a.action, a.status), (Action::ClientCancel, 101));
}

#[test]
fn phase_ends_map_to_outcomes() {
    assert!(Outcome::from_phase(Phase::Request, PhaseOutcome::Forward).is_none());
    let o = Outcome::from_phase(
        Phase::Response,
        PhaseOutcome::Reject {
            by: "x".into(),
            response: None,
        },
    );
    assert!(matches!(
        o,
        Some(Outcome::Rejected {
            phase: Phase::Response,
            ..
        })
    ));
}

#[test]
fn finish_writes_exactly_one_record_with_the_decided_action() {
    let sink = Arc::new(AuditSink::discard());
    let audit = PendingAudit::new(AuditRecord::default(), sink.clone());
    finish(audit, Outcome::Denied { by: "allowlist" });
    assert_eq!(sink.counters.reject.load(Ordering::Relaxed), 1);
    assert_eq!(sink.counters.client_cancel.load(Ordering::Relaxed), 0);
    let audit = PendingAudit::new(AuditRecord::default(), sink.clone());
    finish(audit, Outcome::Opened);
    assert_eq!(sink.counters.allow.load(Ordering::Relaxed), 1);
}

#[test]
fn not_ready_is_a_503_refusal_by_the_proxy() {
    let a = answer(Outcome::Refused(Refusal::Peer(
        crate::identify::PeerRefusal::NotReady,
    )));
    assert_eq!(a.status, 503);
    assert_eq!(a.reason, Some("not_ready"));
    assert_eq!(a.rejected_by.as_deref(), Some("proxy"));
}
