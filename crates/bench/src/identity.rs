//! Identity benchmarks, in process on one thread: how fast the CA signs workload CSRs (against
//! the raw ECDSA P-256 signing rate of the same library, the ceiling), and what a full mesh mTLS
//! handshake costs per hop — wall time and CPU of both ends, against a plain TCP connection
//! doing the same one-byte exchange.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use strait_identity::authority::{Authority, new_csr};
use strait_identity::cacerts::CaFiles;
use strait_identity::policy::{Caller, Limits, Proof};
use strait_identity::tls::{self, ClientAuth, Expect, MeshServerVerifier};
use strait_model::SpiffeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::process;

#[derive(Debug, Clone)]
pub struct Results {
    pub csrs: usize,
    /// CSRs signed per second on one thread (parse, policy, sign, encode the chain).
    pub csr_per_sec: f64,
    /// Bare ECDSA P-256 signatures per second on one thread (ring), the ceiling.
    pub raw_sign_per_sec: f64,
    pub handshakes: usize,
    /// Wall time of connect + full mTLS 1.3 handshake (both sides verify) + a 1-byte echo.
    pub mtls_wall: Duration,
    /// CPU time of both ends for one such connection.
    pub mtls_cpu: Duration,
    /// The same connection and echo in plaintext.
    pub tcp_wall: Duration,
    pub tcp_cpu: Duration,
}

pub fn run(quick: bool) -> anyhow::Result<Results> {
    let now = SystemTime::now();
    let files = CaFiles::self_signed_for_development(now).context("creating a CA")?;
    let authority = Authority::new(
        files,
        Limits {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: vec![],
            default_ttl: Duration::from_secs(86_400),
            max_ttl: Duration::from_secs(86_400 * 90),
        },
    )
    .context("loading the CA")?;
    let identity = SpiffeId::new("cluster.local", "default", "bench");
    let csrs = if quick { 300 } else { 3000 };
    // The workloads' side (key generation, CSR) is not the CA's cost: made beforehand.
    let requests: Vec<String> = (0..csrs)
        .map(|_| new_csr(&identity).map(|(_, pem)| pem))
        .collect::<Result<_, _>>()
        .context("making CSRs")?;
    let caller = Caller {
        identity: identity.clone(),
        proof: Proof::Token,
    };
    let started = Instant::now();
    for csr in &requests {
        authority
            .sign_csr(csr, &caller, Duration::from_secs(86_400), now)
            .context("signing a CSR")?;
    }
    let csr_per_sec = csrs as f64 / started.elapsed().as_secs_f64();
    let raw_sign_per_sec = raw_signatures(csrs)?;

    let handshakes = if quick { 200 } else { 2000 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let server_cert = authority.issue(
        &SpiffeId::new("cluster.local", "default", "server"),
        Duration::from_secs(3600),
        now,
    )?;
    let client_cert = authority.issue(&identity, Duration::from_secs(3600), now)?;
    let roots = tls::root_store(&server_cert.roots)?;
    let server = tls::server_config(
        tls::certified_key(&server_cert)?,
        roots.clone(),
        ClientAuth::Required,
        &[b"istio"],
    )?;
    let client = tls::client_config(
        Some(tls::certified_key(&client_cert)?),
        MeshServerVerifier::new(
            roots,
            Expect::Identities {
                ids: vec![server_cert.identity.to_string()],
                trust_domain_aliases: vec![],
            },
        ),
        &[b"istio"],
    )?;
    let (tcp_wall, tcp_cpu) = runtime.block_on(connections(handshakes, None))?;
    let (mtls_wall, mtls_cpu) =
        runtime.block_on(connections(handshakes, Some((server, client))))?;
    Ok(Results {
        csrs,
        csr_per_sec,
        raw_sign_per_sec,
        handshakes,
        mtls_wall,
        mtls_cpu,
        tcp_wall,
        tcp_cpu,
    })
}

fn raw_signatures(n: usize) -> anyhow::Result<f64> {
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, SigningKey};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
    let message = [7u8; 512];
    let started = Instant::now();
    for _ in 0..n {
        key.sign(&message).context("signing")?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

type TlsPair = (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>);

/// `n` sequential connections with a one-byte echo; mean wall time and CPU (this process: both
/// ends) per connection.
async fn connections(n: usize, tls: Option<TlsPair>) -> anyhow::Result<(Duration, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tls
        .as_ref()
        .map(|(s, _)| tokio_rustls::TlsAcceptor::from(s.clone()));
    let connector = tls
        .as_ref()
        .map(|(_, c)| tokio_rustls::TlsConnector::from(c.clone()));
    let server = tokio::spawn(async move {
        for _ in 0..n {
            let (stream, _) = listener.accept().await?;
            match &acceptor {
                Some(a) => echo_one(a.accept(stream).await?).await?,
                None => echo_one(stream).await?,
            }
        }
        anyhow::Ok(())
    });
    let pid = std::process::id();
    let cpu_before = process::cpu_seconds(pid)?;
    let started = Instant::now();
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match &connector {
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from("outbound_.8080_._.server")?;
                ping(c.connect(name.to_owned(), stream).await?).await?;
            }
            None => ping(stream).await?,
        }
    }
    let wall = started.elapsed();
    let cpu = process::cpu_seconds(pid)? - cpu_before;
    server.await??;
    Ok((wall / n as u32, Duration::from_secs_f64(cpu / n as f64)))
}

async fn ping<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
) -> anyhow::Result<()> {
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(())
}

async fn echo_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
) -> anyhow::Result<()> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    s.write_all(&b).await?;
    s.flush().await?;
    Ok(())
}
