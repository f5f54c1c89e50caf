//! The in-process server the protocol tests talk to: one cluster's manifests in a watched
//! temporary directory, the xDS server over them and its push pipeline running.

#![allow(clippy::unwrap_used, dead_code)] // test helpers; not every test uses every field

use std::path::PathBuf;
use std::time::Duration;

use strait_model::ClusterId;
use strait_registry::{ClusterSpec, Registry, RegistryOptions};
use strait_xds_server::gateway_dns::GatewayResolver;
pub use strait_xds_server::gateway_probe::ProbeSettings;
use strait_xds_server::{ServerOptions, XdsServer};
use tokio::sync::watch;

pub struct Served {
    pub dir: tempfile::TempDir,
    /// The manifest file (`mesh.yaml`); edits apply after a 30 ms debounce.
    pub file: PathBuf,
    pub server: XdsServer,
    /// Dropping it stops the registry's watch.
    pub stop: watch::Sender<bool>,
}

/// Serves cluster `c1` from `text`, resolving gateway names with `resolver`. Mount
/// `server.service()` on a listener of your choice.
pub async fn serve_with(text: &str, resolver: GatewayResolver) -> Served {
    serve_options(
        text,
        ServerOptions {
            cluster: ClusterId::new("c1"),
            root_namespace: "istio-system".into(),
            gateway_resolver: resolver,
            jwks: Default::default(),
            // Tests' gateways are documentation addresses: never probed.
            gateway_probe: ProbeSettings::off(),
        },
    )
    .await
}

/// As [`serve_with`], with every server option chosen.
pub async fn serve_options(text: &str, options: ServerOptions) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, text).unwrap();
    let registry = Registry::load(
        vec![ClusterSpec {
            id: ClusterId::new("c1"),
            paths: vec![dir.path().to_path_buf()],
            network: None,
        }],
        RegistryOptions {
            debounce: Duration::from_millis(30),
            ..Default::default()
        },
    );
    let (server, pipeline) = XdsServer::new(options, registry.subscribe()).await;
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(registry.watch(stop_rx));
    tokio::spawn(pipeline);
    Served {
        dir,
        file,
        server,
        stop,
    }
}
