//! One DNS question, decided: answered from the table (authoritatively, as Istio's proxy does)
//! or handed upstream. Pure: bytes in, bytes or "forward" out.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::lookup::{Lookup, Question};

/// Seconds clients may cache an answer: short, so that a changed address is seen soon
/// (Istio's DNS proxy uses the same).
pub const TTL_SECS: u32 = 30;

/// How the question arrived (decides the largest answer).
pub use crate::exchange::Transport;

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not the mesh's name (or no table yet): ask the upstream resolvers.
    Forward,
    /// Not even a DNS header: nothing to answer.
    Drop,
}

/// Decides `request`. `rotate` turns the order of several addresses (round robin, as
/// Kubernetes DNS does for headless services).
pub fn decide(
    lookup: Option<&Lookup>,
    request: &[u8],
    transport: Transport,
    rotate: usize,
) -> Decision {
    let message = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) if request.len() >= 4 => {
            let id = u16::from_be_bytes([request[0], request[1]]);
            return reply(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Decision::Drop,
    };
    if message.metadata.message_type != MessageType::Query {
        return Decision::Drop;
    }
    if message.metadata.op_code != OpCode::Query {
        return reply(error(&message, ResponseCode::NotImp));
    }
    let Some(query) = message.queries.first() else {
        return reply(error(&message, ResponseCode::FormErr));
    };
    let question = match (query.query_class(), query.query_type()) {
        (DNSClass::IN, RecordType::A) => Question::A,
        (DNSClass::IN, RecordType::AAAA) => Question::Aaaa,
        _ => return Decision::Forward,
    };
    let Some(lookup) = lookup else {
        return Decision::Forward;
    };
    let name = query.name().to_ascii();
    let Some(answer) = lookup.resolve(&name, question) else {
        if lookup.in_zone(&name) {
            let mut m = error(&message, ResponseCode::NXDomain);
            m.metadata.authoritative = true;
            m.metadata.recursion_available = true;
            return reply(m);
        }
        return Decision::Forward;
    };
    let mut response = Message::new(message.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&message.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    if message.edns.is_some() {
        response.set_edns(Edns::new());
    }
    let mut target = query.name().clone();
    if let Some((_, to)) = &answer.alias
        && let Ok(to) = Name::from_ascii(to)
    {
        response.add_answer(Record::from_rdata(
            query.name().clone(),
            TTL_SECS,
            RData::CNAME(CNAME(to.clone())),
        ));
        target = to;
    }
    let n = answer.addresses.len().max(1);
    for i in 0..answer.addresses.len() {
        let data = match answer.addresses[(i + rotate) % n] {
            IpAddr::V4(a) => RData::A(A(a)),
            IpAddr::V6(a) => RData::AAAA(AAAA(a)),
        };
        response.add_answer(Record::from_rdata(target.clone(), TTL_SECS, data));
    }
    let limit = match transport {
        Transport::Udp => usize::from(message.max_payload()),
        Transport::Tcp => usize::from(u16::MAX),
    };
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Decision::Reply(bytes),
        // Too large for the datagram: the client asks again over TCP.
        Ok(_) => reply(response.truncate()),
        Err(_) => reply(error(&message, ResponseCode::ServFail)),
    }
}

/// An error answer to `request`.
fn error(request: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.add_queries(request.queries.iter().cloned());
    m
}

/// A SERVFAIL for a raw request (the upstream resolvers all failed), if it parses.
pub fn server_failure(request: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(request).ok()?;
    error(&message, ResponseCode::ServFail).to_vec().ok()
}

fn reply(message: Message) -> Decision {
    message
        .to_vec()
        .map(Decision::Reply)
        .unwrap_or(Decision::Drop)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;
    use strait_xds::dns::{NameInfo, NameTable, REGISTRY_KUBERNETES};

    use super::*;
    use crate::lookup::LookupContext;

    fn lookup() -> Lookup {
        let mut t = NameTable::default();
        t.hosts.insert(
            "mysql.sample.svc.cluster.local".into(),
            NameInfo {
                ips: vec!["10.1.0.6".into(), "10.1.0.7".into()],
                registry: REGISTRY_KUBERNETES.into(),
                short_name: "mysql".into(),
                namespace: "sample".into(),
                alt_hosts: vec![],
            },
        );
        Lookup::build(
            &t,
            &LookupContext {
                namespace: "sample".into(),
                domain_suffix: "cluster.local".into(),
                search: vec!["sample.svc.cluster.local".into()],
                zone: None,
            },
        )
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn answered(d: Decision) -> Message {
        match d {
            Decision::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn mesh_names_are_answered_with_every_address_in_turn() {
        let l = lookup();
        let m = answered(decide(
            Some(&l),
            &query("mysql.", RecordType::A),
            Transport::Udp,
            1,
        ));
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["10.1.0.7", "10.1.0.6"]);
        assert!(m.answers.iter().all(|r| r.ttl == TTL_SECS));
    }

    #[test]
    fn a_search_expanded_name_answers_with_an_alias_then_the_address() {
        let l = lookup();
        let m = answered(decide(
            Some(&l),
            &query("mysql.sample.sample.svc.cluster.local.", RecordType::A),
            Transport::Udp,
            0,
        ));
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(m.answers[0].data.to_string(), "mysql.sample.");
        assert_eq!(m.answers[1].name.to_ascii(), "mysql.sample.");
        assert_eq!(m.answers[1].data.to_string(), "10.1.0.6");
    }

    #[test]
    fn unknown_names_other_types_and_no_table_go_upstream_and_garbage_is_refused() {
        let l = lookup();
        let q = query("example.org.", RecordType::A);
        assert_eq!(decide(Some(&l), &q, Transport::Udp, 0), Decision::Forward);
        let mx = query("mysql.sample.svc.cluster.local.", RecordType::MX);
        assert_eq!(decide(Some(&l), &mx, Transport::Udp, 0), Decision::Forward);
        let a = query("mysql.sample.svc.cluster.local.", RecordType::A);
        assert_eq!(decide(None, &a, Transport::Udp, 0), Decision::Forward);
        let m = answered(decide(
            Some(&l),
            &[0xab, 0xcd, 1, 0, 0xff],
            Transport::Udp,
            0,
        ));
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0xabcd, ResponseCode::FormErr)
        );
        assert_eq!(decide(Some(&l), &[1], Transport::Udp, 0), Decision::Drop);
    }

    #[test]
    fn unknown_names_in_an_authoritative_zone_do_not_exist() {
        let mut t = NameTable::default();
        t.hosts.insert(
            "mysql.sample.svc.cluster.local".into(),
            NameInfo {
                ips: vec!["10.1.0.6".into()],
                registry: REGISTRY_KUBERNETES.into(),
                ..NameInfo::default()
            },
        );
        let l = Lookup::build(
            &t,
            &LookupContext {
                zone: Some("cluster.local".into()),
                ..LookupContext::default()
            },
        );
        let m = answered(decide(
            Some(&l),
            &query("nothing.sample.svc.cluster.local.", RecordType::A),
            Transport::Udp,
            0,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        // No short forms without a short name (a cluster's DNS answers full names only).
        assert_eq!(
            decide(
                Some(&l),
                &query("mysql.sample.", RecordType::A),
                Transport::Udp,
                0
            ),
            Decision::Forward
        );
        let m = answered(decide(
            Some(&l),
            &query("mysql.sample.svc.cluster.local.", RecordType::A),
            Transport::Udp,
            0,
        ));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn the_empty_family_of_a_known_name_is_noerror_without_answers() {
        let l = lookup();
        let m = answered(decide(
            Some(&l),
            &query("mysql.sample.svc.cluster.local.", RecordType::AAAA),
            Transport::Udp,
            0,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }
}
