//! Answers DNS questions: static records, then passthrough, then interception.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::metrics::Metrics;
use crate::resolve::{ResolveError, Resolver};

use super::glob::HostGlob;
use super::records::{StaticEntry, StaticRecords, name_key};

/// TTL of every answer we synthesise, as in iron-proxy.
pub const ANSWER_TTL: u32 = 60;
/// Longest static CNAME chain followed; longer chains (or loops) answer SERVFAIL.
pub const MAX_CNAME_CHAIN: usize = 8;
/// Passthrough lookups that take longer answer SERVFAIL: stub resolvers typically give up after
/// 5 s, so answering first lets them fail fast instead of retrying into the same wait.
pub const PASSTHROUGH_DEADLINE: Duration = Duration::from_secs(4);

/// The answer section and response code for one question.
#[derive(Debug)]
pub struct Answer {
    pub records: Vec<Record>,
    pub code: ResponseCode,
}

impl Answer {
    fn new(records: Vec<Record>, code: ResponseCode) -> Self {
        Self { records, code }
    }
}

/// What happens to names that are neither static nor passthrough.
pub enum Interception {
    /// DNS-interception mode: `A` answers the agent's address.
    ProxyIp(Ipv4Addr),
    /// eBPF mode: real answers for names a policy may allow, NXDOMAIN for the rest.
    Policy(Arc<dyn super::NamePolicy>),
}

pub struct DnsHandler {
    interception: Interception,
    records: StaticRecords,
    passthrough: Vec<HostGlob>,
    resolver: Arc<Resolver>,
    /// Where answered questions are counted (the agent's registry).
    metrics: Arc<Metrics>,
}

impl DnsHandler {
    pub fn new(
        interception: Interception,
        records: StaticRecords,
        passthrough: &[String],
        resolver: Arc<Resolver>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let passthrough = passthrough
            .iter()
            .filter_map(|p| {
                let glob = HostGlob::new(p);
                if glob.is_malformed() {
                    tracing::warn!(pattern = %p, "dns passthrough pattern is malformed and matches nothing");
                    return None;
                }
                Some(glob)
            })
            .collect();
        Self {
            interception,
            records,
            passthrough,
            resolver,
            metrics,
        }
    }

    /// Answers one question. Owner names keep the casing of `qname` (or of the configured CNAME
    /// target further down a chain).
    pub async fn answer(&self, qname: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        let answer = self.lookup(qname, qtype, qclass).await;
        self.metrics
            .dns_query(qtype_label(qtype), answer_label(&answer));
        answer
    }

    async fn lookup(&self, qname: &Name, qtype: RecordType, qclass: DNSClass) -> Answer {
        let mut records = Vec::new();
        // Only Internet-class data exists here; anything else has no records.
        if qclass != DNSClass::IN {
            return Answer::new(records, ResponseCode::NoError);
        }
        let mut owner = qname.clone();
        for _ in 0..=MAX_CNAME_CHAIN {
            match self.records.get(&name_key(&owner)) {
                Some(StaticEntry::Cname(target)) => {
                    records.push(Record::from_rdata(
                        owner.clone(),
                        ANSWER_TTL,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if qtype == RecordType::CNAME {
                        return Answer::new(records, ResponseCode::NoError);
                    }
                    // Follow the chain: the target answers the original type.
                    owner = target.clone();
                }
                Some(StaticEntry::A(ips)) => {
                    // A static name is authoritative for every type: AAAA etc. get NODATA.
                    if qtype == RecordType::A {
                        records.extend(ips.iter().map(|ip| {
                            Record::from_rdata(owner.clone(), ANSWER_TTL, RData::A(A(*ip)))
                        }));
                    }
                    return Answer::new(records, ResponseCode::NoError);
                }
                None => {
                    let code = self.dynamic(&owner, qtype, &mut records).await;
                    return Answer::new(records, code);
                }
            }
        }
        tracing::warn!(name = %qname, "dns static CNAME chain is too long or loops; answering SERVFAIL");
        Answer::new(Vec::new(), ResponseCode::ServFail)
    }

    /// Passthrough or interception for a name without static records.
    async fn dynamic(
        &self,
        owner: &Name,
        qtype: RecordType,
        out: &mut Vec<Record>,
    ) -> ResponseCode {
        let key = name_key(owner);
        if !self.passthrough.iter().any(|g| g.matches(&key)) {
            match &self.interception {
                Interception::ProxyIp(ip) => {
                    if qtype == RecordType::A {
                        out.push(Record::from_rdata(
                            owner.clone(),
                            ANSWER_TTL,
                            RData::A(A(*ip)),
                        ));
                    }
                    // AAAA, HTTPS, SVCB and the rest: NODATA, so clients fall back to the A answer.
                    return ResponseCode::NoError;
                }
                Interception::Policy(p) if !p.may_allow(key.trim_end_matches('.')) => {
                    return ResponseCode::NXDomain;
                }
                // Allowed in eBPF mode: resolved for real below, like a passthrough name.
                Interception::Policy(_) => {}
            }
        }
        if qtype != RecordType::A && qtype != RecordType::AAAA {
            // Only addresses are passed through; other types are NODATA and never forwarded.
            return ResponseCode::NoError;
        }
        // Absolute name: a passthrough question must not be expanded with the search list.
        let mut fqdn = owner.clone();
        fqdn.set_fqdn(true);
        let host = fqdn.to_ascii();
        let lookup = async {
            if qtype == RecordType::A {
                let ips = self.resolver.lookup_ipv4(&host).await?;
                Ok::<Vec<RData>, ResolveError>(ips.into_iter().map(|ip| RData::A(A(ip))).collect())
            } else {
                let ips = self.resolver.lookup_ipv6(&host).await?;
                Ok(ips.into_iter().map(|ip| RData::AAAA(AAAA(ip))).collect())
            }
        };
        let result = match tokio::time::timeout(PASSTHROUGH_DEADLINE, lookup).await {
            Ok(r) => r,
            Err(_) => Err(ResolveError::Deadline {
                host: host.clone(),
                limit: PASSTHROUGH_DEADLINE,
            }),
        };
        match result {
            Ok(data) => {
                out.extend(
                    data.into_iter()
                        .map(|d| Record::from_rdata(owner.clone(), ANSWER_TTL, d)),
                );
                ResponseCode::NoError
            }
            Err(e) if e.is_not_found() => ResponseCode::NXDomain,
            Err(e) => {
                // SERVFAIL rather than an empty NOERROR: clients retry instead of caching "no address".
                tracing::warn!(name = %host, qtype = %qtype, error = %e, "dns passthrough lookup failed");
                ResponseCode::ServFail
            }
        }
    }
}

/// Severity order for combining the codes of several questions in one message.
/// Query types as metric labels: the common ones by name, the rest as `other` (bounded).
fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::CNAME => "CNAME",
        RecordType::HTTPS => "HTTPS",
        RecordType::SVCB => "SVCB",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::PTR => "PTR",
        RecordType::NS => "NS",
        RecordType::SOA => "SOA",
        RecordType::SRV => "SRV",
        _ => "other",
    }
}

/// The answer type label: `records`, `nodata`, `nxdomain`, `servfail`, or `other`.
fn answer_label(a: &Answer) -> &'static str {
    match a.code {
        ResponseCode::NoError if a.records.is_empty() => "nodata",
        ResponseCode::NoError => "records",
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::ServFail => "servfail",
        _ => "other",
    }
}

fn severity(code: ResponseCode) -> u8 {
    match code {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        _ => 2,
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        // We resolve passthrough names on the client's behalf, so recursion is available.
        metadata.recursion_available = true;

        let mut answers = Vec::new();
        let mut code = ResponseCode::NoError;
        if request.metadata.op_code != OpCode::Query {
            code = ResponseCode::NotImp;
        } else if request.queries.is_empty() {
            code = ResponseCode::FormErr;
        } else {
            // iron-proxy answers every question of a message and appends the answers.
            for query in request.queries.queries() {
                let q = query.original();
                let answer = self.answer(q.name(), q.query_type(), q.query_class()).await;
                answers.extend(answer.records);
                if severity(answer.code) > severity(code) {
                    code = answer.code;
                }
            }
        }
        if code == ResponseCode::ServFail {
            // Partial data next to SERVFAIL only confuses resolvers.
            answers.clear();
        }
        metadata.response_code = code;

        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: cannot send response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
