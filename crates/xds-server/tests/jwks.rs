//! RequestAuthentication `jwksUri`s: the control plane fetches the key set from a key server on
//! loopback (plain HTTP, as a test can serve it), publishes it for translation, follows it when
//! the server starts serving another (rotated keys), keeps the last good one while the server
//! answers garbage, and forgets it when no rule names the URI any more; over `https://` it takes
//! key sets only from servers its trust roots vouch for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_model::ClusterId;
use strait_xds_server::ServerOptions;
use strait_xds_server::jwks_fetch::JwksOptions;
use support::*;

/// Reads one request from `s` and answers it with `text` as JSON, closing the connection.
async fn answer<S>(mut s: S, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 2048];
    let _ = s.read(&mut buf).await;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A key server answering every request with the current `body`.
async fn key_server(body: Arc<Mutex<String>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let text = body.lock().unwrap().clone();
            tokio::spawn(async move { answer(s, &text).await });
        }
    });
    addr
}

fn key_set(kid: &str) -> String {
    // A P-256 point's coordinates are 32 bytes each; the values need not be on the curve for the
    // control plane, which only passes key sets on.
    format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}}"#
    )
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uris_are_fetched_followed_and_kept_when_the_server_fails() {
    let body = Arc::new(Mutex::new(key_set("one")));
    let addr = key_server(body.clone()).await;
    let uri = format!("http://{addr}/.well-known/jwks.json");
    let manifests = |with_rule: bool| {
        let mut m = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: foo}\n");
        if with_rule {
            m.push_str(&format!("---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: issuer.example\n    jwksUri: {uri}\n    timeout: 2s\n"));
        }
        m
    };
    let served = serve_options(
        &manifests(true),
        ServerOptions {
            cluster: ClusterId::new("c1"),
            root_namespace: "istio-system".into(),
            gateway_resolver: Default::default(),
            jwks: JwksOptions {
                refresh: Duration::from_millis(300),
                retry: Duration::from_millis(300),
                trust_roots: None,
            },
            gateway_probe: ProbeSettings::off(),
        },
    )
    .await;
    let server = served.server.clone();
    let table = move || server.current().jwks.clone();
    assert_eq!(table().get(&uri), Some(&key_set("one")), "fetched at start");

    *body.lock().unwrap() = key_set("two");
    wait_until("the rotated key set", || {
        table().get(&uri) == Some(&key_set("two"))
    })
    .await;

    // Garbage: the last good key set stays.
    *body.lock().unwrap() = "<html>maintenance</html>".into();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(table().get(&uri), Some(&key_set("two")));

    // No rule names it any more: forgotten.
    std::fs::write(&served.file, manifests(false)).unwrap();
    wait_until("the URI to be forgotten", || table().is_empty()).await;
}

/// A key server over TLS on 127.0.0.1 answering `body`, its certificate (for the IP) issued by a
/// fresh root; the root as PEM.
async fn tls_key_server(body: String) -> (std::net::SocketAddr, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(tcp).await {
                    answer(s, &body).await;
                }
            });
        }
    });
    (addr, root_cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_jwks_uris_are_fetched_from_servers_the_trust_roots_vouch_for_only() {
    let (trusted, root) = tls_key_server(key_set("tls")).await;
    // Another root's server: its key set must never be taken.
    let (stranger, _) = tls_key_server(key_set("stranger")).await;
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, root).unwrap();
    let trusted_uri = format!("https://{trusted}/jwks");
    let stranger_uri = format!("https://{stranger}/jwks");
    let manifests = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: foo}}\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: trusted.example\n    jwksUri: {trusted_uri}\n  - issuer: stranger.example\n    jwksUri: {stranger_uri}\n"
    );
    let served = serve_options(
        &manifests,
        ServerOptions {
            cluster: ClusterId::new("c1"),
            root_namespace: "istio-system".into(),
            gateway_resolver: Default::default(),
            jwks: JwksOptions {
                refresh: Duration::from_secs(60),
                retry: Duration::from_millis(200),
                trust_roots: Some(roots),
            },
            gateway_probe: ProbeSettings::off(),
        },
    )
    .await;
    let server = served.server.clone();
    let table = move || server.current().jwks.clone();
    wait_until("the trusted key set", || {
        table().get(&trusted_uri) == Some(&key_set("tls"))
    })
    .await;
    // Retried every 200 ms meanwhile: still refused.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(table().get(&stranger_uri), None, "{:?}", table());
}
