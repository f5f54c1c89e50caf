//! The DNS proxy on real sockets: mesh names answered over UDP and TCP, other names forwarded
//! to an upstream resolver (a stand-in on loopback), SERVFAIL when no upstream answers, and
//! the last table kept until a new one arrives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use strait_dns::LookupContext;
use strait_dns::server::DnsServer;
use strait_xds::dns::{NameInfo, NameTable, REGISTRY_KUBERNETES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn table(ip: &str) -> NameTable {
    let mut t = NameTable::default();
    t.hosts.insert(
        "helloworld.sample.svc.cluster.local".into(),
        NameInfo {
            ips: vec![ip.into()],
            registry: REGISTRY_KUBERNETES.into(),
            short_name: "helloworld".into(),
            namespace: "sample".into(),
            alt_hosts: vec![],
        },
    );
    t
}

fn question(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, name: &str) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&question(name, 7), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf))
        .await
        .expect("the DNS proxy answers within 10 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn ask_tcp(server: SocketAddr, name: &str) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    let q = question(name, 9);
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&q).await.unwrap();
    let len = s.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// An upstream resolver that knows `example.org` (192.0.2.80, TTL 60 s) over UDP, and counts
/// questions.
async fn upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicU32>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.add_queries(q.queries.iter().cloned());
            let known = q.queries[0].name().to_ascii() == "example.org.";
            if known && q.queries[0].query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(
                    q.queries[0].name().clone(),
                    60,
                    RData::A(A([192, 0, 2, 80].into())),
                ));
            } else if !known {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            socket.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    (addr, asked)
}

async fn start(upstreams: Vec<SocketAddr>) -> (SocketAddr, Arc<DnsServer>) {
    // UDP and TCP on one port: the tests ask over both at this address.
    let (server, addr) = DnsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        LookupContext {
            namespace: "sample".into(),
            domain_suffix: "cluster.local".into(),
            search: vec!["sample.svc.cluster.local".into()],
            zone: None,
        },
        upstreams,
        None,
    )
    .await
    .unwrap();
    (addr, server)
}

#[tokio::test]
async fn mesh_names_are_answered_and_the_rest_forwarded() {
    let (up, asked) = upstream().await;
    let (addr, server) = start(vec![up]).await;

    // Before any table: everything goes upstream (the mesh name is unknown there).
    let m = ask_udp(addr, "helloworld.sample.svc.cluster.local.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);

    server.update(&Arc::new(table("10.96.0.20")));
    for name in [
        "helloworld.",
        "helloworld.sample.",
        "helloworld.sample.svc.cluster.local.",
    ] {
        let m = ask_udp(addr, name).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(addresses(&m), ["10.96.0.20"], "{name}");
        let m = ask_tcp(addr, name).await;
        assert_eq!(addresses(&m), ["10.96.0.20"], "{name} over TCP");
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);

    let m = ask_udp(addr, "example.org.").await;
    assert_eq!(m.metadata.id, 7);
    assert_eq!(addresses(&m), ["192.0.2.80"]);
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);

    // A new table replaces the old one.
    server.update(&Arc::new(table("10.96.0.21")));
    assert_eq!(
        addresses(&ask_udp(addr, "helloworld.").await),
        ["10.96.0.21"]
    );
    let stats = &server.stats;
    assert_eq!(
        stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(stats.answered.load(std::sync::atomic::Ordering::Relaxed), 7);
}

#[tokio::test]
async fn no_upstream_answering_is_servfail_and_mesh_names_still_answer() {
    // An address nothing listens on: the question times out there.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (addr, server) = start(vec![silent_addr]).await;
    server.update(&Arc::new(table("10.96.0.20")));
    let m = ask_udp(addr, "example.org.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        server
            .stats
            .upstream_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        addresses(&ask_udp(addr, "helloworld.").await),
        ["10.96.0.20"]
    );
    drop(silent);
}

#[tokio::test]
async fn the_stub_resolver_keeps_the_ttl_and_moves_on_from_a_silent_server() {
    let (up, _) = upstream().await;
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = strait_dns::client::resolve("example.org", &[silent.local_addr().unwrap(), up])
        .await
        .unwrap();
    assert_eq!(
        r.ips,
        vec!["192.0.2.80".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(r.ttl, Duration::from_secs(60));
    let none = strait_dns::client::resolve("nothing.example.", &[up])
        .await
        .unwrap();
    assert!(none.ips.is_empty());
    assert!(
        strait_dns::client::resolve("example.org", &[silent.local_addr().unwrap()])
            .await
            .is_err()
    );
}
