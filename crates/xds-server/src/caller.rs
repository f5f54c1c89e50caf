//! Who is asking for a proxy's configuration, and whether they may (pure). On the plaintext
//! port (15010) anyone may, as in Istio; on the TLS port (15012) the client must present its
//! mesh certificate, and its identity's namespace must be the proxy's — a workload cannot read
//! another namespace's configuration (Istio's xDS authorization). Secrets go only to such
//! verified clients.

use strait_model::SpiffeId;
use strait_translate::ProxyNode;
use tonic::Status;

/// The xDS client, as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The plaintext port: no identity is checked.
    Plaintext,
    /// The TLS port; the SPIFFE identity of the client's verified certificate, if it sent one.
    Tls(Option<SpiffeId>),
}

/// Whether `caller` may take `proxy`'s configuration.
pub fn authorize(caller: &Caller, proxy: &ProxyNode) -> Result<(), Status> {
    match caller {
        Caller::Plaintext => Ok(()),
        Caller::Tls(None) => Err(Status::unauthenticated(format!(
            "proxy {}: the TLS xDS port needs the workload's mesh certificate (get one from the CA first, or use the plaintext port)",
            proxy.id
        ))),
        Caller::Tls(Some(id)) if id.namespace == proxy.namespace => Ok(()),
        Caller::Tls(Some(id)) => Err(Status::permission_denied(format!(
            "proxy {}: identity {id} may not take the configuration of a proxy in namespace {:?} (the node ID's namespace must be the certificate's)",
            proxy.id, proxy.namespace
        ))),
    }
}

/// Whether `caller`, once authorized for a proxy, may be sent the Secrets of the proxy's
/// namespace: only over TLS with a verified identity (whose namespace [`authorize`] checked).
pub fn may_read_secrets(caller: &Caller) -> bool {
    matches!(caller, Caller::Tls(Some(_)))
}

#[cfg(test)]
mod tests {
    use strait_model::ClusterId;
    use strait_translate::NodeInfo;

    use super::*;

    #[test]
    fn the_tls_port_needs_an_identity_of_the_proxys_namespace() {
        let proxy = ProxyNode::from_node(
            &NodeInfo {
                id: "sidecar~10.0.0.1~sleep.sample~sample.svc.cluster.local".into(),
                ..Default::default()
            },
            &ClusterId::new("c1"),
        )
        .unwrap();
        let id = |ns: &str| SpiffeId::new("cluster.local", ns, "sleep");
        assert!(authorize(&Caller::Plaintext, &proxy).is_ok());
        assert!(authorize(&Caller::Tls(Some(id("sample"))), &proxy).is_ok());
        let e = authorize(&Caller::Tls(Some(id("other"))), &proxy).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message()
                .contains("spiffe://cluster.local/ns/other/sa/sleep"),
            "{}",
            e.message()
        );
        let e = authorize(&Caller::Tls(None), &proxy).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(may_read_secrets(&Caller::Tls(Some(id("sample")))));
        assert!(!may_read_secrets(&Caller::Plaintext));
    }
}
