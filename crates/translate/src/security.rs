//! Which mTLS mode a workload port accepts, from PeerAuthentication as Istio resolves it: a
//! workload policy (selector) over the namespace's over the mesh's (root namespace); `UNSET`
//! inherits from the level above; `portLevelMtls` of a workload policy overrides its port; with
//! no policy at all the mode is PERMISSIVE.

use std::collections::BTreeMap;

use strait_config::istio::security::{MtlsMode, PeerAuthentication};
use strait_config::resource::Object;

use crate::MeshView;

/// What a workload port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PeerMode {
    /// mTLS and plaintext, told apart per connection.
    #[default]
    Permissive,
    /// mTLS only.
    Strict,
    /// Plaintext only.
    Disable,
}

impl PeerMode {
    fn from_config(mode: Option<MtlsMode>) -> Option<PeerMode> {
        match mode? {
            MtlsMode::Unset => None,
            MtlsMode::Disable => Some(PeerMode::Disable),
            MtlsMode::Permissive => Some(PeerMode::Permissive),
            MtlsMode::Strict => Some(PeerMode::Strict),
        }
    }

    /// One letter for cache keys.
    pub fn key(self) -> &'static str {
        match self {
            PeerMode::Permissive => "p",
            PeerMode::Strict => "s",
            PeerMode::Disable => "d",
        }
    }
}

fn has_selector(pa: &PeerAuthentication) -> bool {
    pa.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// What PeerAuthentication lets in on a workload: its mode, and the ports `portLevelMtls` of
/// its workload policy sets otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    pub workload: PeerMode,
    pub ports: BTreeMap<u16, PeerMode>,
}

impl PeerPolicy {
    /// The mode of `port`.
    pub fn mode(&self, port: u16) -> PeerMode {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

/// The policy of a workload in `namespace` with `labels`.
pub fn peer_policy(
    view: &MeshView<'_>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> PeerPolicy {
    let policies = &view.config.peer_authentications;
    let mesh = policies
        .iter()
        .find(|p| p.meta.namespace == view.root_namespace && !has_selector(&p.spec));
    let namespace_level = policies
        .iter()
        .find(|p| p.meta.namespace == namespace && !has_selector(&p.spec));
    let workload = policies.iter().find(|p| {
        p.meta.namespace == namespace
            && p.spec.selector.as_ref().is_some_and(|s| {
                !s.match_labels.is_empty()
                    && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
    });
    let level = |p: Option<&std::sync::Arc<Object<PeerAuthentication>>>| {
        p.and_then(|p| PeerMode::from_config(p.spec.mtls.as_ref().and_then(|m| m.mode)))
    };
    let ports = workload
        .and_then(|w| w.spec.port_level_mtls.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(port, m)| Some((port.parse().ok()?, PeerMode::from_config(m.mode)?)))
        .collect();
    PeerPolicy {
        workload: level(workload)
            .or_else(|| level(namespace_level))
            .or_else(|| level(mesh))
            .unwrap_or_default(),
        ports,
    }
}
