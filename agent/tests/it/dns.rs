//! DNS server and resolver, end to end over real UDP and TCP sockets on 127.0.0.1.

// Helpers outside #[test] fns are not covered by allow-unwrap-in-tests; a panic is the failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use iron_agent::config::{DnsConfig, DnsRecord, DnsRecordType};
use iron_agent::dns::serve;
use iron_agent::resolve::Resolver;
use iron_agent_tests::dns::{Answer, FakeDns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PROXY_IP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 2);
const UPSTREAM_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const UPSTREAM_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Fake upstream DNS server (the shared one in iron-agent-tests) with fixed answers.
// ---------------------------------------------------------------------------------------------

/// Names under `internal.test` and `pass.test` exist with one A and one AAAA, except:
/// `v4only.internal.test` (A only), `missing.internal.test` (NXDOMAIN), `broken.internal.test`
/// (SERVFAIL). Everything else is NXDOMAIN.
async fn fake_upstream() -> FakeDns {
    FakeDns::start(300, |name, _| {
        let exists = name.ends_with(".internal.test") || name.ends_with(".pass.test");
        match name {
            _ if !exists || name == "missing.internal.test" => Answer::NxDomain,
            "broken.internal.test" => Answer::ServFail,
            "v4only.internal.test" => Answer::Ips(vec![UPSTREAM_V4.into()]),
            _ => Answer::Ips(vec![UPSTREAM_V4.into(), UPSTREAM_V6.into()]),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The server under test.
// ---------------------------------------------------------------------------------------------

struct Dns {
    udp: SocketAddr,
    tcp: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), iron_agent::dns::DnsError>>,
}

impl Dns {
    async fn stop(self) {
        self.shutdown.cancel();
        let res = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve did not stop");
        res.unwrap().unwrap();
    }
}

fn record(name: &str, kind: DnsRecordType, value: &str) -> DnsRecord {
    DnsRecord {
        name: name.into(),
        kind,
        value: value.into(),
    }
}

fn config(upstream: Option<SocketAddr>) -> DnsConfig {
    DnsConfig {
        enabled: true,
        proxy_ip: Some(PROXY_IP),
        upstream_resolver: upstream.map(|a| a.to_string().parse().unwrap()),
        passthrough: vec![
            "*.Internal.TEST.".into(),
            "api.pass.test".into(),
            "*.both.test".into(),
        ],
        records: vec![
            record("custom.local", DnsRecordType::A, "10.0.0.5"),
            record("Multi.Local.", DnsRecordType::A, "10.0.0.6"),
            record("multi.local", DnsRecordType::A, "10.0.0.7"),
            record("alias.local", DnsRecordType::Cname, "alias2.local"),
            record("alias2.local", DnsRecordType::Cname, "custom.local"),
            record(
                "to-intercepted.local",
                DnsRecordType::Cname,
                "somewhere.example.com",
            ),
            record(
                "to-passthrough.local",
                DnsRecordType::Cname,
                "db.internal.test",
            ),
            record("static.internal.test", DnsRecordType::A, "10.9.9.9"),
            record("loop1.local", DnsRecordType::Cname, "loop2.local"),
            record("loop2.local", DnsRecordType::Cname, "loop1.local"),
        ],
        ..DnsConfig::default()
    }
}

async fn start(cfg: DnsConfig) -> Dns {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let upstream = cfg
        .upstream_resolver
        .as_ref()
        .map(|a| a.socket_addr().unwrap());
    let resolver = Arc::new(Resolver::new(upstream).unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        cfg,
        udp,
        tcp,
        resolver,
        None,
        Default::default(),
        shutdown.clone(),
    ));
    Dns {
        udp: udp_addr,
        tcp: tcp_addr,
        shutdown,
        task,
    }
}

// ---------------------------------------------------------------------------------------------
// Client helpers.
// ---------------------------------------------------------------------------------------------

fn query_bytes(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

async fn udp_exchange(server: SocketAddr, packet: &[u8]) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("no UDP answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn udp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let resp = udp_exchange(server, &query_bytes(0x1234, name, qtype)).await;
    assert_eq!(resp.metadata.id, 0x1234);
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    resp
}

async fn tcp_exchange(stream: &mut TcpStream, packet: &[u8]) -> Message {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await.unwrap();
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await.unwrap();
        body
    };
    let body = tokio::time::timeout(WAIT, read)
        .await
        .expect("no TCP answer");
    Message::from_vec(&body).unwrap()
}

async fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_exchange(&mut stream, &query_bytes(0x4321, name, qtype)).await
}

fn a_answers(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn aaaa_answers(msg: &Message) -> Vec<Ipv6Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn cname_targets(msg: &Message) -> Vec<String> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.to_ascii()),
            _ => None,
        })
        .collect()
}

fn assert_nodata(msg: &Message) {
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert!(
        msg.answers.is_empty(),
        "expected NODATA, got {:?}",
        msg.answers
    );
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn intercept_a_answers_proxy_ip_with_ttl_60() {
    let dns = start(config(None)).await;
    let resp = udp_query(dns.udp, "api.openai.com.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert!(resp.metadata.authoritative);
    assert_eq!(a_answers(&resp), vec![PROXY_IP]);
    assert_eq!(resp.answers[0].ttl, 60);
    assert_eq!(resp.answers[0].name.to_ascii(), "api.openai.com.");
    assert_eq!(resp.queries.len(), 1);
    dns.stop().await;
}

#[tokio::test]
async fn intercept_aaaa_https_svcb_and_others_get_nodata() {
    let dns = start(config(None)).await;
    for qtype in [
        RecordType::AAAA,
        RecordType::HTTPS,
        RecordType::Unknown(65),
        RecordType::SVCB,
        RecordType::MX,
        RecordType::TXT,
        RecordType::CNAME,
    ] {
        let resp = udp_query(dns.udp, "api.openai.com.", qtype).await;
        assert_nodata(&resp);
    }
    dns.stop().await;
}

#[tokio::test]
async fn static_a_record() {
    let dns = start(config(None)).await;
    let resp = udp_query(dns.udp, "custom.local.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    assert_eq!(resp.answers[0].ttl, 60);
    // Two A records for one name (configured with different casing) both answer.
    let resp = udp_query(dns.udp, "multi.local.", RecordType::A).await;
    assert_eq!(
        a_answers(&resp),
        vec![Ipv4Addr::new(10, 0, 0, 6), Ipv4Addr::new(10, 0, 0, 7)]
    );
    // A static name owns every type: no AAAA leaks from interception or passthrough.
    assert_nodata(&udp_query(dns.udp, "custom.local.", RecordType::AAAA).await);
    dns.stop().await;
}

#[tokio::test]
async fn static_cname_answers_cname_and_a_by_following_the_chain() {
    let upstream = fake_upstream().await;
    let dns = start(config(Some(upstream.addr))).await;

    let resp = udp_query(dns.udp, "alias.local.", RecordType::CNAME).await;
    assert_eq!(cname_targets(&resp), vec!["alias2.local."]);
    assert!(a_answers(&resp).is_empty());

    let resp = udp_query(dns.udp, "alias.local.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(cname_targets(&resp), vec!["alias2.local.", "custom.local."]);
    assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    let owners: Vec<String> = resp.answers.iter().map(|r| r.name.to_ascii()).collect();
    assert_eq!(
        owners,
        vec!["alias.local.", "alias2.local.", "custom.local."]
    );

    // The final target is intercepted: A → proxy_ip, AAAA → the chain without data.
    let resp = udp_query(dns.udp, "to-intercepted.local.", RecordType::A).await;
    assert_eq!(cname_targets(&resp), vec!["somewhere.example.com."]);
    assert_eq!(a_answers(&resp), vec![PROXY_IP]);
    let resp = udp_query(dns.udp, "to-intercepted.local.", RecordType::AAAA).await;
    assert_eq!(cname_targets(&resp), vec!["somewhere.example.com."]);
    assert!(aaaa_answers(&resp).is_empty());

    // The final target is a passthrough name: real answers.
    let resp = udp_query(dns.udp, "to-passthrough.local.", RecordType::A).await;
    assert_eq!(cname_targets(&resp), vec!["db.internal.test."]);
    assert_eq!(a_answers(&resp), vec![UPSTREAM_V4]);
    let resp = udp_query(dns.udp, "to-passthrough.local.", RecordType::AAAA).await;
    assert_eq!(aaaa_answers(&resp), vec![UPSTREAM_V6]);

    // A loop is cut off instead of spinning.
    let resp = udp_query(dns.udp, "loop1.local.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
    assert!(resp.answers.is_empty());
    dns.stop().await;
}

#[tokio::test]
async fn static_records_take_precedence_over_passthrough() {
    let upstream = fake_upstream().await;
    let dns = start(config(Some(upstream.addr))).await;
    let resp = udp_query(dns.udp, "static.internal.test.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 9, 9, 9)]);
    assert_nodata(&udp_query(dns.udp, "static.internal.test.", RecordType::AAAA).await);
    assert_eq!(upstream.queries(), 0, "static name went upstream");
    dns.stop().await;
}

#[tokio::test]
async fn passthrough_answers_a_and_aaaa_from_the_upstream() {
    let upstream = fake_upstream().await;
    let dns = start(config(Some(upstream.addr))).await;

    let resp = udp_query(dns.udp, "db.internal.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_answers(&resp), vec![UPSTREAM_V4]);
    assert_eq!(resp.answers[0].ttl, 60);
    let resp = udp_query(dns.udp, "db.internal.test.", RecordType::AAAA).await;
    assert_eq!(aaaa_answers(&resp), vec![UPSTREAM_V6]);
    assert_eq!(resp.answers[0].ttl, 60);
    // `*.x` covers the apex and deeper names; a plain pattern matches exactly.
    assert_eq!(
        a_answers(&udp_query(dns.udp, "a.b.internal.test.", RecordType::A).await),
        vec![UPSTREAM_V4]
    );
    assert_eq!(
        a_answers(&udp_query(dns.udp, "api.pass.test.", RecordType::A).await),
        vec![UPSTREAM_V4]
    );

    // Name exists without AAAA: NODATA.
    assert_nodata(&udp_query(dns.udp, "v4only.internal.test.", RecordType::AAAA).await);
    // Other types for passthrough names: NODATA, not forwarded.
    assert_nodata(&udp_query(dns.udp, "db.internal.test.", RecordType::TXT).await);
    // NXDOMAIN upstream is passed on.
    let resp = udp_query(dns.udp, "missing.internal.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(resp.answers.is_empty());
    // A failing upstream gives SERVFAIL.
    let resp = udp_query(dns.udp, "broken.internal.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
    assert!(resp.answers.is_empty());

    // Names not matching a passthrough glob never leave the host.
    let before = upstream.queries();
    assert_eq!(
        a_answers(&udp_query(dns.udp, "other.pass.test.", RecordType::A).await),
        vec![PROXY_IP]
    );
    assert_eq!(
        a_answers(&udp_query(dns.udp, "notinternal.test.", RecordType::A).await),
        vec![PROXY_IP]
    );
    assert_nodata(&udp_query(dns.udp, "other.pass.test.", RecordType::AAAA).await);
    assert_eq!(upstream.queries(), before);
    dns.stop().await;
}

#[tokio::test]
async fn passthrough_lookup_failure_answers_servfail() {
    // Nothing listens on this upstream: every lookup times out or is refused.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let dns = start(config(Some(dead_addr))).await;
    let resp = udp_query(dns.udp, "db.internal.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
    // The server still answers everything else.
    assert_eq!(
        a_answers(&udp_query(dns.udp, "x.example.", RecordType::A).await),
        vec![PROXY_IP]
    );
    dns.stop().await;
}

#[tokio::test]
async fn names_match_case_insensitively_ignoring_the_trailing_dot() {
    let upstream = fake_upstream().await;
    let dns = start(config(Some(upstream.addr))).await;

    // Static record: config "custom.local", query in mixed case; the owner echoes the query.
    let resp = udp_query(dns.udp, "CuStOm.LoCaL.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    assert_eq!(resp.answers[0].name.to_ascii(), "CuStOm.LoCaL.");
    assert_eq!(resp.queries[0].name().to_ascii(), "CuStOm.LoCaL.");
    // Config "Multi.Local." (capitals and trailing dot) matches a lower-case query.
    assert_eq!(
        a_answers(&udp_query(dns.udp, "multi.local", RecordType::A).await).len(),
        2
    );

    // Passthrough pattern "*.Internal.TEST." matches an upper-case query.
    let resp = udp_query(dns.udp, "DB.INTERNAL.TEST.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![UPSTREAM_V4]);
    assert_eq!(resp.answers[0].name.to_ascii(), "DB.INTERNAL.TEST.");

    // Interception echoes the casing too.
    let resp = udp_query(dns.udp, "Api.OpenAI.com.", RecordType::A).await;
    assert_eq!(resp.answers[0].name.to_ascii(), "Api.OpenAI.com.");
    dns.stop().await;
}

#[tokio::test]
async fn answers_over_tcp() {
    let upstream = fake_upstream().await;
    let dns = start(config(Some(upstream.addr))).await;
    let resp = tcp_query(dns.tcp, "api.openai.com.", RecordType::A).await;
    assert_eq!(resp.metadata.id, 0x4321);
    assert_eq!(a_answers(&resp), vec![PROXY_IP]);
    assert_nodata(&tcp_query(dns.tcp, "api.openai.com.", RecordType::AAAA).await);
    assert_eq!(
        a_answers(&tcp_query(dns.tcp, "custom.local.", RecordType::A).await),
        vec![Ipv4Addr::new(10, 0, 0, 5)]
    );
    assert_eq!(
        aaaa_answers(&tcp_query(dns.tcp, "db.internal.test.", RecordType::AAAA).await),
        vec![UPSTREAM_V6]
    );

    // Several queries on one connection.
    let mut stream = TcpStream::connect(dns.tcp).await.unwrap();
    for id in 1..=3u16 {
        let resp = tcp_exchange(&mut stream, &query_bytes(id, "x.example.", RecordType::A)).await;
        assert_eq!(resp.metadata.id, id);
        assert_eq!(a_answers(&resp), vec![PROXY_IP]);
    }
    dns.stop().await;
}

#[tokio::test]
async fn edns_queries_are_answered_with_edns() {
    let dns = start(config(None)).await;
    let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii("x.example.").unwrap(),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    let resp = udp_exchange(dns.udp, &msg.to_vec().unwrap()).await;
    assert_eq!(a_answers(&resp), vec![PROXY_IP]);
    assert!(resp.edns.is_some());
    dns.stop().await;
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_server() {
    let dns = start(config(None)).await;

    // UDP: too short for a header, random junk, and a header promising a question that is cut off.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&[0xde, 0xad, 0xbe], dns.udp).await.unwrap();
    sock.send_to(&[0xff; 64], dns.udp).await.unwrap();
    let mut truncated = query_bytes(0x0101, "api.openai.com.", RecordType::A);
    truncated.truncate(20);
    sock.send_to(&truncated, dns.udp).await.unwrap();
    // A compression pointer loop in the question name.
    let pointer_loop = [
        0x00, 0x02, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01,
    ];
    sock.send_to(&pointer_loop, dns.udp).await.unwrap();
    // Whatever comes back for those (FORMERR or nothing), a valid query is still answered.
    let resp = udp_query(dns.udp, "api.openai.com.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![PROXY_IP]);

    // TCP: a junk frame, then a connection that dies mid-frame.
    let mut junk = TcpStream::connect(dns.tcp).await.unwrap();
    let mut frame = 40u16.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xab; 40]);
    junk.write_all(&frame).await.unwrap();
    let mut half = TcpStream::connect(dns.tcp).await.unwrap();
    half.write_all(&[0x01, 0x00, 0x12]).await.unwrap();
    drop(half);
    let resp = tcp_query(dns.tcp, "api.openai.com.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![PROXY_IP]);
    let resp = udp_query(dns.udp, "custom.local.", RecordType::A).await;
    assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 0, 0, 5)]);
    drop(junk);

    assert!(!dns.task.is_finished());
    dns.stop().await;
}

#[tokio::test]
async fn serve_requires_proxy_ip() {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = DnsConfig {
        proxy_ip: None,
        ..config(None)
    };
    let resolver = Arc::new(Resolver::new(None).unwrap());
    let err = serve(
        cfg,
        udp,
        tcp,
        resolver,
        None,
        Default::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, iron_agent::dns::DnsError::MissingProxyIp));
}

#[tokio::test]
async fn resolver_uses_the_configured_upstream() {
    let upstream = fake_upstream().await;
    let resolver = Resolver::new(Some(upstream.addr)).unwrap();
    assert_eq!(resolver.upstream(), Some(upstream.addr));

    let ips = resolver.lookup_ip("db.internal.test").await.unwrap();
    assert_eq!(ips, vec![IpAddr::V4(UPSTREAM_V4), IpAddr::V6(UPSTREAM_V6)]);
    assert_eq!(
        resolver.lookup_ipv4("db.internal.test.").await.unwrap(),
        vec![UPSTREAM_V4]
    );
    assert_eq!(
        resolver.lookup_ipv6("db.internal.test.").await.unwrap(),
        vec![UPSTREAM_V6]
    );
    assert!(
        resolver
            .lookup_ipv6("v4only.internal.test.")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        resolver.lookup_ip("v4only.internal.test.").await.unwrap(),
        vec![IpAddr::V4(UPSTREAM_V4)]
    );

    let err = resolver
        .lookup_ip("missing.internal.test.")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = resolver
        .lookup_ipv4("missing.internal.test.")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = resolver
        .lookup_ipv4("broken.internal.test.")
        .await
        .unwrap_err();
    assert!(!err.is_not_found(), "{err}");

    // IP literals never reach the upstream.
    let before = upstream.queries();
    assert_eq!(
        resolver.lookup_ip("[2001:db8::1]").await.unwrap(),
        vec![IpAddr::V6("2001:db8::1".parse().unwrap())]
    );
    assert_eq!(
        resolver.lookup_ip("192.0.2.1").await.unwrap(),
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]
    );
    assert_eq!(upstream.queries(), before);
}

#[tokio::test]
async fn resolver_resolves_localhost_with_the_system_configuration() {
    let resolver = Resolver::new(None).unwrap();
    assert_eq!(resolver.upstream(), None);
    let ips = tokio::time::timeout(WAIT, resolver.lookup_ip("localhost"))
        .await
        .expect("localhost lookup must not wait on the network")
        .unwrap();
    assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
}
