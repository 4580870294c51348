use std::collections::HashMap;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};

use super::convert;
use super::proto::{HeaderValues, HttpRequest, HttpResponse};
use crate::identify::{ClientAddr, HostName};
use crate::transform::body::{DecodedPath, decoded_path, full};
use crate::transform::{Mode, ProxyRequest, RequestCx};

fn request() -> ProxyRequest {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/a/b?q=1")
        .header("host", "api.example:8443")
        .header("x-request-id", "r1")
        .header("accept", "a")
        .header("accept", "b")
        .header("content-length", "3")
        .body(full("abc"))
        .unwrap();
    req.extensions_mut().insert(DecodedPath("/a/b".into()));
    req
}

fn values(v: &[&str]) -> HeaderValues {
    HeaderValues {
        values: v.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn the_service_sees_go_canonical_headers_without_host() {
    let cx = RequestCx::new(
        HostName::new("api.example"),
        ClientAddr("127.0.0.1:5000".parse().unwrap()),
        Mode::Mitm,
    );
    let r = convert::request(&cx, &request(), None);
    assert_eq!((r.method.as_str(), r.url.as_str()), ("POST", "/a/b?q=1"));
    assert_eq!(r.host, "api.example:8443");
    assert_eq!(r.remote_addr, "127.0.0.1:5000");
    assert_eq!(r.headers["X-Request-Id"], values(&["r1"]));
    assert_eq!(r.headers["Accept"], values(&["a", "b"]));
    assert!(!r.headers.contains_key("Host"));
    assert!(r.body.is_empty());
}

#[test]
fn modified_request_keeps_host_and_real_framing() {
    let mut req = request();
    let m = HttpRequest {
        method: "PUT".into(),
        url: "https://elsewhere.example/new%20path?x=2".into(),
        headers: HashMap::from([
            ("X-New".into(), values(&["1"])),
            ("Content-Length".into(), values(&["999"])),
            ("Host".into(), values(&["evil.example"])),
        ]),
        ..Default::default()
    };
    convert::apply_request(&mut req, m).unwrap();
    assert_eq!(req.method(), "PUT");
    assert_eq!(req.uri().to_string(), "/new%20path?x=2");
    assert_eq!(decoded_path(&req), "/new path");
    assert_eq!(req.headers()[HOST], "api.example:8443");
    assert_eq!(
        req.headers()[CONTENT_LENGTH],
        "3",
        "the body did not change"
    );
    assert_eq!(req.headers()["x-new"], "1");
    assert!(
        req.headers().get("x-request-id").is_none(),
        "all headers replaced"
    );

    let m = HttpRequest {
        body: b"longer body".to_vec(),
        ..Default::default()
    };
    convert::apply_request(&mut req, m).unwrap();
    assert_eq!(req.headers()[CONTENT_LENGTH], "11");
}

#[test]
fn bad_modifications_are_errors_not_forwards() {
    for url in ["/a/../admin", "/%2e%2e/x", "not a url"] {
        let m = HttpRequest {
            url: url.into(),
            ..Default::default()
        };
        assert!(convert::apply_request(&mut request(), m).is_err(), "{url}");
    }
    let m = HttpRequest {
        headers: HashMap::from([("bad name".into(), values(&["v"]))]),
        ..Default::default()
    };
    assert!(convert::apply_request(&mut request(), m).is_err());
    let r = HttpResponse {
        status_code: 1000,
        ..Default::default()
    };
    assert!(convert::reject(Some(r)).is_err());
}

#[test]
fn reject_defaults() {
    assert!(
        convert::reject(None).unwrap().is_none(),
        "pipeline default 403"
    );
    let resp = convert::reject(Some(HttpResponse::default()))
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/plain");
    assert_eq!(resp.headers()[CONTENT_LENGTH], "0");
}
