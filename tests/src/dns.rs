//! DNS helpers: build and send real DNS packets, and a fake upstream resolver.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m.to_vec().expect("encode query")
}

pub async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&query(7, name, qtype), server)
        .await
        .expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("dns timeout")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("decode answer")
}

pub async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect(server).await.expect("connect dns tcp");
    let q = query(9, name, qtype);
    s.write_all(&(q.len() as u16).to_be_bytes())
        .await
        .expect("len");
    s.write_all(&q).await.expect("query");
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
        .await
        .expect("timeout")
        .expect("read len");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.expect("read answer");
    Message::from_vec(&buf).expect("decode")
}

pub fn a_answers(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// A fake upstream resolver on 127.0.0.1: every A query is answered with 127.0.0.1, every
/// other type with an empty NOERROR. Returns its address; runs until the runtime ends.
pub async fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake dns");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            resp.metadata.recursion_available = true;
            for query in &q.queries {
                resp.add_query(query.clone());
                if query.query_type() == RecordType::A {
                    resp.add_answer(Record::from_rdata(
                        query.name().clone(),
                        30,
                        RData::A(A(Ipv4Addr::LOCALHOST)),
                    ));
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// A fake authoritative server on 127.0.0.1 for fixed names (`name`, ip) — A for IPv4 and AAAA
/// for IPv6 entries; unknown names get NXDOMAIN.
pub async fn fake_zone(entries: &[(&str, &str)]) -> SocketAddr {
    use hickory_proto::rr::rdata::AAAA;
    let zone: Vec<(String, std::net::IpAddr)> = entries
        .iter()
        .map(|(n, ip)| {
            (
                n.trim_end_matches('.').to_ascii_lowercase(),
                ip.parse().expect("ip"),
            )
        })
        .collect();
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind fake zone");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            resp.metadata.recursion_available = true;
            resp.metadata.authoritative = true;
            let mut known = false;
            for query in &q.queries {
                resp.add_query(query.clone());
                let name = query
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                for (zn, ip) in &zone {
                    if *zn != name {
                        continue;
                    }
                    known = true;
                    match (ip, query.query_type()) {
                        (std::net::IpAddr::V4(v4), RecordType::A) => {
                            resp.add_answer(Record::from_rdata(
                                query.name().clone(),
                                30,
                                RData::A(A(*v4)),
                            ));
                        }
                        (std::net::IpAddr::V6(v6), RecordType::AAAA) => {
                            resp.add_answer(Record::from_rdata(
                                query.name().clone(),
                                30,
                                RData::AAAA(AAAA(*v6)),
                            ));
                        }
                        _ => {}
                    }
                }
            }
            if !known {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}
