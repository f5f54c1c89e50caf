//! A stub resolver that keeps the answer's TTL (the C library's resolver does not say it): the
//! control plane resolves gateways addressed by DNS name with it, and asks again when the
//! answer expires.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::exchange::{Transport, exchange};

/// How long one server gets per question.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A name's addresses and how long they may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub ips: Vec<IpAddr>,
    /// The smallest TTL of the records; 30 s when there are none.
    pub ttl: Duration,
}

/// Asks `servers` in order for `name`'s IPv4 and IPv6 addresses (the first server that answers
/// decides; "no such name" is an answer, with no addresses).
pub async fn resolve(name: &str, servers: &[SocketAddr]) -> std::io::Result<Resolved> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let name = Name::from_ascii(&fqdn).map_err(|e| invalid(format!("{fqdn}: {e}")))?;
    let mut last_error = invalid("no name server to ask".to_string());
    for server in servers {
        let mut ips = Vec::new();
        let mut ttl: Option<u32> = None;
        let mut failed = None;
        for t in [RecordType::A, RecordType::AAAA] {
            match ask(&name, t, *server).await {
                Ok((found, found_ttl)) => {
                    ips.extend(found);
                    ttl = match (ttl, found_ttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                return Ok(Resolved {
                    ips,
                    ttl: Duration::from_secs(u64::from(ttl.unwrap_or(NO_RECORDS_TTL))),
                });
            }
            Some(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// The answer to question `id`.
fn parse(bytes: Vec<u8>, id: u16) -> std::io::Result<Message> {
    Message::from_vec(&bytes)
        .ok()
        .filter(|m| m.metadata.id == id)
        .ok_or_else(|| invalid("a malformed answer".into()))
}

/// Seconds to wait before asking again about a name that had no addresses.
const NO_RECORDS_TTL: u32 = 30;

/// One question to one server (over UDP, again over TCP when the answer was truncated): the
/// addresses and their smallest TTL.
async fn ask(
    name: &Name,
    t: RecordType,
    server: SocketAddr,
) -> std::io::Result<(Vec<IpAddr>, Option<u32>)> {
    // A random ID (hickory's), so that a stray answer is not taken for this one.
    let mut q = Message::query();
    let id = q.metadata.id;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name.clone(), t));
    let bytes = q.to_vec().map_err(|e| invalid(e.to_string()))?;
    let mut reply = parse(
        exchange(server, &bytes, Transport::Udp, None, TIMEOUT).await?,
        id,
    )?;
    if reply.metadata.truncation {
        reply = parse(
            exchange(server, &bytes, Transport::Tcp, None, TIMEOUT).await?,
            id,
        )?;
    }
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(invalid(format!("{server}: {other}"))),
    }
    let mut ips = Vec::new();
    let mut ttl: Option<u32> = None;
    for r in &reply.answers {
        match &r.data {
            RData::A(a) => ips.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
            _ => continue,
        }
        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
    }
    Ok((ips, ttl))
}

/// What the C library's resolver (also `/etc/hosts`) answers for `name`, within `timeout`; it
/// carries no TTL. No address is an error.
pub async fn system(name: &str, port: u16, timeout: Duration) -> std::io::Result<Vec<SocketAddr>> {
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses",
        ));
    }
    Ok(addrs)
}
