//! DNS helpers: build and send real DNS packets, and one fake DNS server ([`FakeDns`]) for
//! every test that needs an upstream resolver or a zone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
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

/// What a [`FakeDns`] answers for one question.
pub enum Answer {
    /// NOERROR with the addresses of the asked family (A: IPv4, AAAA: IPv6; other types and
    /// the other family: no records).
    Ips(Vec<IpAddr>),
    NxDomain,
    ServFail,
}

/// A fake DNS server on 127.0.0.1 (UDP): every question is answered with `answer(name,
/// type)` (`name` lower-case, without the trailing dot), records with a fixed TTL. Counts the
/// queries it got; stops when dropped.
pub struct FakeDns {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDns {
    pub async fn start(
        ttl: u32,
        answer: impl Fn(&str, RecordType) -> Answer + Send + 'static,
    ) -> FakeDns {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake dns");
        let addr = sock.local_addr().expect("addr");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let resp = respond(&q, ttl, &answer);
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        FakeDns {
            addr,
            queries,
            task,
        }
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Keeps serving until the runtime ends; returns the address.
    pub fn detach(self) -> SocketAddr {
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }
}

fn respond(q: &Message, ttl: u32, answer: &dyn Fn(&str, RecordType) -> Answer) -> Message {
    let mut resp = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = q.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    for query in &q.queries {
        resp.add_query(query.clone());
        let name = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ips = match answer(&name, query.query_type()) {
            Answer::Ips(ips) => ips,
            Answer::NxDomain => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                continue;
            }
            Answer::ServFail => {
                resp.metadata.response_code = ResponseCode::ServFail;
                continue;
            }
        };
        for ip in ips {
            let data = match (ip, query.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                _ => continue,
            };
            resp.add_answer(Record::from_rdata(query.name().clone(), ttl, data));
        }
    }
    resp
}

/// A fake upstream resolver: every name exists, every A query is answered with 127.0.0.1,
/// every other type with an empty NOERROR. Runs until the runtime ends.
pub async fn fake_upstream() -> SocketAddr {
    FakeDns::start(30, |_, _| Answer::Ips(vec![Ipv4Addr::LOCALHOST.into()]))
        .await
        .detach()
}

/// A fake authoritative server for fixed names (`name`, ip) — A for IPv4 and AAAA for IPv6
/// entries; unknown names get NXDOMAIN. Runs until the runtime ends.
pub async fn fake_zone(entries: &[(&str, &str)]) -> SocketAddr {
    let zone: Vec<(String, IpAddr)> = entries
        .iter()
        .map(|(n, ip)| {
            (
                n.trim_end_matches('.').to_ascii_lowercase(),
                ip.parse().expect("ip"),
            )
        })
        .collect();
    FakeDns::start(30, move |name, _| {
        let ips: Vec<IpAddr> = zone
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, ip)| *ip)
            .collect();
        if ips.is_empty() {
            Answer::NxDomain
        } else {
            Answer::Ips(ips)
        }
    })
    .await
    .detach()
}
