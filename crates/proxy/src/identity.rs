//! The proxy's workload identity as TLS: the current certificate and trust bundle (Istio's SDS
//! secrets `default` and `ROOTCA`), and the rustls configurations built from them — one server
//! configuration per ALPN list, one client configuration per accepted identity set — rebuilt
//! when the certificate rotates, so each new connection uses the newest material while
//! established ones keep theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use strait_identity::WorkloadCert;
use strait_identity::tls::{self, ClientAuth, Expect, MeshServerVerifier};
use strait_xds::MESH_MTLS_ALPN;
use strait_xds::cluster::UpstreamTls;

/// A client configuration's accepted identities and ALPN.
type ClientKey = (Vec<String>, Vec<String>);

struct Material {
    cert: Arc<WorkloadCert>,
    key: Arc<rustls::sign::CertifiedKey>,
    roots: Arc<RootCertStore>,
    servers: Mutex<HashMap<Vec<String>, Arc<ServerConfig>>>,
    clients: Mutex<HashMap<ClientKey, Arc<ClientConfig>>>,
}

/// The proxy's identity, shared by listeners and clusters.
#[derive(Default)]
pub struct MeshIdentity {
    current: ArcSwapOption<Material>,
    /// Every trust domain of the mesh's group (its own and its aliases).
    pub trust_domains: Vec<String>,
    /// Whether the proxy obtains certificates at all (else TLS configuration is refused).
    pub enabled: bool,
    /// Woken when a certificate is installed.
    installed: tokio::sync::Notify,
}

impl MeshIdentity {
    pub fn new(enabled: bool, trust_domains: Vec<String>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            trust_domains,
            enabled,
            installed: tokio::sync::Notify::new(),
        }
    }

    /// Installs a new certificate (and the trust bundle it came with).
    pub fn set(&self, cert: Arc<WorkloadCert>) -> Result<(), String> {
        let key = tls::certified_key(&cert).map_err(|e| e.to_string())?;
        let roots = tls::root_store(&cert.roots).map_err(|e| e.to_string())?;
        self.current.store(Some(Arc::new(Material {
            cert,
            key,
            roots,
            servers: Mutex::default(),
            clients: Mutex::default(),
        })));
        self.installed.notify_waiters();
        Ok(())
    }

    /// Waits until the proxy has a certificate, at most `within`; whether it has one.
    pub async fn wait_for_certificate(&self, within: std::time::Duration) -> bool {
        let installed = async {
            loop {
                // Made before looking, so an installation in between still wakes it.
                let notified = self.installed.notified();
                if self.current.load().is_some() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, installed).await.is_ok()
    }

    /// The current certificate, for the admin API.
    pub fn certificate(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load().as_ref().map(|m| m.cert.clone())
    }

    /// Terminating mesh mTLS: present our certificate, require the client's.
    pub fn server_config(&self, alpn: &[String]) -> Result<Arc<ServerConfig>, String> {
        let m = self.material()?;
        let mut servers = m.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = servers.get(alpn) {
            return Ok(c.clone());
        }
        // Mesh clients offer Istio's ALPN values; rustls refuses a handshake whose ALPN offer
        // it cannot meet, so accept them besides the chain's own (the application protocol is
        // detected after the handshake).
        let alpn_bytes: Vec<&[u8]> = alpn
            .iter()
            .map(|a| a.as_bytes())
            .chain(MESH_MTLS_ALPN.iter().map(|a| a.as_bytes()))
            .collect();
        let config = tls::server_config(
            m.key.clone(),
            m.roots.clone(),
            ClientAuth::Required,
            &alpn_bytes,
        )
        .map_err(|e| e.to_string())?;
        servers.insert(alpn.to_vec(), config.clone());
        Ok(config)
    }

    /// Originating mesh mTLS to a cluster: present our certificate, accept only the identities
    /// the control plane says back the destination.
    pub fn client_config(&self, upstream: &UpstreamTls) -> Result<Arc<ClientConfig>, String> {
        let m = self.material()?;
        let key = (upstream.subject_alt_names.clone(), upstream.alpn.clone());
        let mut clients = m.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let expect = if upstream.subject_alt_names.is_empty() {
            Expect::AnyMeshIdentity
        } else {
            Expect::Identities {
                ids: upstream.subject_alt_names.clone(),
                trust_domain_aliases: self.trust_domains.clone(),
            }
        };
        let alpn: Vec<&[u8]> = upstream.alpn.iter().map(|a| a.as_bytes()).collect();
        let config = tls::client_config(
            Some(m.key.clone()),
            MeshServerVerifier::new(m.roots.clone(), expect),
            &alpn,
        )
        .map_err(|e| e.to_string())?;
        clients.insert(key, config.clone());
        Ok(config)
    }

    fn material(&self) -> Result<Arc<Material>, String> {
        self.current.load_full().ok_or_else(|| {
            if self.enabled {
                "no workload certificate yet (the CA has not answered)".to_string()
            } else {
                "this proxy has no workload identity (start it with --ca-address and a bootstrap token)".to_string()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use strait_identity::authority::Authority;
    use strait_identity::cacerts::CaFiles;
    use strait_identity::policy::Limits;

    use super::*;

    #[tokio::test]
    async fn waiting_for_the_first_certificate_ends_when_it_is_installed_or_in_time() {
        let now = SystemTime::now();
        let ca = Authority::new(
            CaFiles::self_signed_for_development(now).unwrap(),
            Limits::default(),
        )
        .unwrap();
        let id = strait_identity::SpiffeId::new("cluster.local", "default", "sleep");
        let cert = Arc::new(ca.issue(&id, Duration::from_secs(3600), now).unwrap());

        let none = MeshIdentity::new(true, vec![]);
        assert!(!none.wait_for_certificate(Duration::from_millis(50)).await);

        let identity = Arc::new(MeshIdentity::new(true, vec![]));
        let installer = identity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            installer.set(cert).unwrap();
        });
        let started = std::time::Instant::now();
        assert!(identity.wait_for_certificate(Duration::from_secs(10)).await);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        // Already there: at once.
        assert!(identity.wait_for_certificate(Duration::ZERO).await);
    }
}
