//! One HTTP/1.1 request from the control plane to an `http://` or `https://` URL (key servers,
//! the Kubernetes API), TLS verified against a PEM bundle of trust roots; answers larger than
//! 1 MiB are refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::TcpStream;

/// Answers larger than this are refused.
const MAX_BYTES: usize = 1 << 20;

/// What to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub method: http::Method,
    pub uri: &'a str,
    /// Sent as `authorization: Bearer <token>`.
    pub bearer: Option<&'a str>,
    /// Sent with `content-type: application/json`.
    pub json_body: Option<String>,
}

/// Sends `out` and reads the answer (its status and body) within `timeout`.
pub async fn send(
    out: Outgoing<'_>,
    timeout: Duration,
    roots: &Path,
) -> Result<(http::StatusCode, String), String> {
    tokio::time::timeout(timeout, send_now(out, roots))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

async fn send_now(out: Outgoing<'_>, roots: &Path) -> Result<(http::StatusCode, String), String> {
    let parsed: http::Uri = out.uri.parse().map_err(|e| format!("not a URL: {e}"))?;
    let tls = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http:// and https:// URLs are fetched".into()),
    };
    let host = parsed.host().ok_or("the URL has no host")?.to_string();
    let port = parsed.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let path = parsed
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let mut request = http::Request::builder()
        .method(out.method)
        .uri(path)
        .header(
            http::header::HOST,
            parsed.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "strait-control-plane");
    if let Some(token) = out.bearer {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if out.json_body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(out.json_body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    if tls {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(client_config(roots)?);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

/// One HTTP/1.1 request on `io`: the answer's status and body.
async fn exchange<IO>(
    io: IO,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8")?;
    Ok((status, text))
}

/// TLS verified against the trust roots in the PEM bundle `path`.
fn client_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the trust roots ({}): {e}", path.display()))?;
    for cert in certs.flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "no trust roots in {}: give a PEM bundle that vouches for the server",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
