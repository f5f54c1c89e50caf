//! The manifest registry: a directory (or files) of manifests per cluster, watched and reloaded
//! with debounce. A document that becomes invalid keeps its last good version in effect and the
//! problem is reported; deleting a file removes its objects. Every change is published as a
//! consistent [`Snapshot`] (configuration, mesh model, problems); [`Snapshot::changes_since`]
//! tells which services and which objects changed, so pushes can be incremental.

mod registry;
mod snapshot;
pub mod store;

pub use registry::{ClusterSpec, Pushed, Registry, RegistryOptions};
pub use snapshot::{Change, ConfigKey, Snapshot};
