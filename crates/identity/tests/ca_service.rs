//! The certificate service end to end over TLS on loopback: a workload obtains its certificate
//! with a bootstrap token, renews with its certificate, and is refused what it is not entitled to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use strait_identity::cacerts::CaFiles;
use strait_identity::policy::Limits;
use strait_identity::service::CaService;
use strait_identity::serving::{ServingNames, serving_config};
use strait_identity::token::{TokenKey, claims};
use strait_identity::transport::tls_incoming;
use strait_identity::workload::{CaClientOptions, request_certificate};
use strait_identity::{Authority, SpiffeId};

struct Ca {
    address: String,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    tokens: Arc<TokenKey>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start_ca() -> Ca {
    let files = CaFiles::self_signed_for_development(SystemTime::now()).expect("ca");
    let authority = Authority::new(files, Limits::default()).expect("authority");
    let roots = authority.roots().to_vec();
    let names = ServingNames::istiod("cluster.local", "istio-system", &[]);
    let config = serving_config(&authority, &names, SystemTime::now()).expect("serving");
    let (tokens, _) = TokenKey::generate();
    let tokens = Arc::new(tokens);
    let service = CaService::new(
        Arc::new(ArcSwap::from_pointee(authority)),
        Some(tokens.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let incoming = tls_incoming(listener, Arc::new(ArcSwap::new(config)));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            }),
    );
    Ca {
        address,
        roots,
        tokens,
        _stop: stop_tx,
    }
}

fn options(
    ca: &Ca,
    dir: &std::path::Path,
    token_for: (&str, &str),
    identity: (&str, &str),
) -> CaClientOptions {
    let token = ca.tokens.mint(&claims(
        token_for.0,
        token_for.1,
        "cluster1",
        SystemTime::now(),
        Duration::from_secs(600),
    ));
    let token_file = dir.join(format!("token-{}-{}", token_for.0, token_for.1));
    std::fs::write(&token_file, token).expect("token");
    CaClientOptions {
        address: ca.address.clone(),
        server_name: "istiod.istio-system.svc".into(),
        bootstrap_roots: ca.roots.clone(),
        token_file: Some(token_file),
        identity: SpiffeId::new("cluster.local", identity.0, identity.1),
        ttl: Duration::from_secs(3600),
        mark: None,
    }
}

#[tokio::test]
async fn a_workload_gets_renews_and_is_refused_what_is_not_its_own() {
    let ca = start_ca().await;
    let dir = tempfile::tempdir().expect("tempdir");

    let opts = options(&ca, dir.path(), ("sample", "sleep"), ("sample", "sleep"));
    let cert = request_certificate(&opts, None)
        .await
        .expect("issued with a token");
    assert_eq!(
        cert.identity.to_string(),
        "spiffe://cluster.local/ns/sample/sa/sleep"
    );
    assert_eq!(cert.roots, ca.roots);
    let life = cert
        .not_after
        .duration_since(cert.not_before)
        .expect("life");
    assert!((3600..=3660).contains(&life.as_secs()), "{life:?}");

    // Renewal on the certificate alone (the token file is gone).
    let renew = CaClientOptions {
        token_file: Some(dir.path().join("missing")),
        ..opts.clone()
    };
    let renewed = request_certificate(&renew, Some(&cert))
        .await
        .expect("renewed with the certificate");
    assert_eq!(renewed.identity, cert.identity);
    assert_ne!(renewed.chain, cert.chain);

    // A token for one namespace cannot obtain another's identity.
    let other = options(
        &ca,
        dir.path(),
        ("sample", "sleep"),
        ("kube-system", "admin"),
    );
    let err = request_certificate(&other, None)
        .await
        .expect_err("refused");
    assert!(
        err.contains("PermissionDenied") && err.contains("kube-system"),
        "{err}"
    );

    // No credentials at all.
    let none = CaClientOptions {
        token_file: None,
        ..opts.clone()
    };
    let err = request_certificate(&none, None)
        .await
        .expect_err("unauthenticated");
    assert!(err.contains("Unauthenticated"), "{err}");

    // A token minted with another key.
    let (foreign, _) = TokenKey::generate();
    let forged = dir.path().join("forged");
    std::fs::write(
        &forged,
        foreign.mint(&claims(
            "sample",
            "sleep",
            "",
            SystemTime::now(),
            Duration::from_secs(60),
        )),
    )
    .expect("write");
    let err = request_certificate(
        &CaClientOptions {
            token_file: Some(forged),
            ..opts.clone()
        },
        None,
    )
    .await
    .expect_err("forged token");
    assert!(err.contains("signature"), "{err}");

    // A revoked token: refused with the reason, though its signature and expiry are good.
    let revoked = dir.path().join("revoked");
    let c = claims(
        "sample",
        "sleep",
        "",
        SystemTime::now(),
        Duration::from_secs(60),
    );
    std::fs::write(&revoked, ca.tokens.mint(&c)).expect("write");
    ca.tokens.set_revocations(
        strait_identity::revocation::Revocations::parse(&format!("token {}", c.id), "list")
            .expect("list"),
    );
    let err = request_certificate(
        &CaClientOptions {
            token_file: Some(revoked),
            ..opts.clone()
        },
        None,
    )
    .await
    .expect_err("revoked token");
    assert!(err.contains("revoked"), "{err}");
    ca.tokens
        .set_revocations(strait_identity::revocation::Revocations::default());

    // A CA the workload does not trust (another root) fails the handshake.
    let stranger = CaFiles::self_signed_for_development(SystemTime::now()).expect("other");
    let wrong_roots = CaClientOptions {
        bootstrap_roots: stranger.roots,
        ..opts.clone()
    };
    let err = request_certificate(&wrong_roots, None)
        .await
        .expect_err("untrusted CA");
    assert!(err.contains("cannot connect"), "{err}");
}
