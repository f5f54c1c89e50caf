//! What each connected proxy was sent and acknowledged, for `/debug/syncz` and metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use strait_translate::ProxyNode;
use strait_xds::ResourceType;

/// One resource type's synchronisation state with one proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_version: String,
    pub acked_nonce: String,
    /// The client's reason, when its latest answer was a NACK.
    pub last_nack: Option<String>,
    pub nacks: u64,
    /// Resources in the last response (for delta: changed ones).
    pub last_sent_resources: usize,
    pub subscribed: usize,
}

/// A connected proxy.
#[derive(Debug, Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub node_id: String,
    #[serde(skip)]
    pub proxy: ProxyNode,
    pub kind: String,
    pub cluster: String,
    pub network: String,
    pub locality: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// Whether the client proved a mesh identity of the proxy's namespace (the TLS port), and
    /// so may be sent the Secrets of that namespace (a plaintext client never is, as in Istio).
    pub reads_secrets: bool,
    pub connected_at: String,
    pub types: Mutex<BTreeMap<String, TypeStatus>>,
}

impl ConnectionInfo {
    pub fn new(id: u64, proxy: ProxyNode, protocol: &'static str, reads_secrets: bool) -> Self {
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            id,
            node_id: proxy.id.clone(),
            kind: format!("{:?}", proxy.kind),
            cluster: proxy.cluster.to_string(),
            network: proxy.network.to_string(),
            locality: proxy.locality.to_string(),
            proxy,
            protocol,
            reads_secrets,
            connected_at: format!("{since}"),
            types: Mutex::new(BTreeMap::new()),
        }
    }

    /// Updates one type's status.
    pub fn update(&self, t: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        if let Ok(mut map) = self.types.lock() {
            f(map.entry(t.short().to_string()).or_default());
        }
    }

    pub fn status(&self) -> BTreeMap<String, TypeStatus> {
        self.types.lock().map(|m| m.clone()).unwrap_or_default()
    }
}
