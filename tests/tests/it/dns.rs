//! DNS through the running agent: real packets over UDP and TCP, and upstream dials resolved
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! through `dns.upstream_resolver`.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use iron_agent_tests::client::get;
use iron_agent_tests::config::{Dns, DnsRecord};
use iron_agent_tests::dns::{a_answers, fake_upstream, rcode, tcp, udp};
use iron_agent_tests::{Agent, AgentConfig, Origin, OriginKind, TestCa, Transform, http_request};

fn dns_config(
    c: &std::path::Path,
    k: &std::path::Path,
    upstream: std::net::SocketAddr,
) -> AgentConfig {
    AgentConfig {
        dns: Dns {
            listen: Some("127.0.0.1:0".into()),
            proxy_ip: Some("10.9.8.7".into()),
            upstream_resolver: Some(upstream.to_string()),
            passthrough: vec!["*.passthrough.test".into()],
            records: vec![DnsRecord {
                name: "fixed.test".into(),
                kind: "A".into(),
                value: "192.0.2.10".into(),
            }],
            ..Dns::default()
        },
        ..AgentConfig::loopback(c, k)
    }
    .transforms([Transform::allowlist(&["*.test"])])
}

#[test]
fn dns_intercept_passthrough_records_over_udp_and_tcp() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let upstream = fake_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("m").write(dir.path());
        let agent = Agent::with(&dns_config(&c, &k, upstream)).start();
        let dns = agent.addr("dns");

        let m = udp(dns, "api.example.com.", RecordType::A).await;
        assert_eq!(
            a_answers(&m),
            vec!["10.9.8.7".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(m.answers[0].ttl, 60);
        let m = tcp(dns, "API.Example.com.", RecordType::A).await;
        assert_eq!(
            a_answers(&m),
            vec!["10.9.8.7".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        for t in [RecordType::AAAA, RecordType::HTTPS] {
            let m = udp(dns, "api.example.com.", t).await;
            assert_eq!(rcode(&m), ResponseCode::NoError);
            assert!(m.answers.is_empty(), "{t:?} must be NODATA");
        }
        let m = udp(dns, "fixed.test.", RecordType::A).await;
        assert_eq!(
            a_answers(&m),
            vec!["192.0.2.10".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let m = udp(dns, "svc.passthrough.test.", RecordType::A).await;
        assert_eq!(
            a_answers(&m),
            vec![std::net::Ipv4Addr::LOCALHOST],
            "real answer from upstream"
        );
    });
}

#[test]
fn upstream_dials_use_the_configured_resolver() {
    let rt = iron_agent_tests::runtime();
    rt.block_on(async {
        let upstream = fake_upstream().await;
        let origin = Origin::start(OriginKind::Http, None).await;
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = TestCa::new("m").write(dir.path());
        let agent = Agent::with(&dns_config(&c, &k, upstream)).start();
        // `origin.test` exists only in the fake resolver (→ 127.0.0.1).
        let r = http_request(
            agent.addr("http"),
            get(&format!("origin.test:{}", origin.port()), "/r"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(origin.hits(), 1);
    });
}
