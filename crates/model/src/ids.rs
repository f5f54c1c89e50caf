//! Names of clusters, networks and hosts: cheap to clone, compared by value.

use std::fmt;
use std::sync::Arc;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: &str) -> Self {
                Self(Arc::from(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name's text itself, shared rather than copied.
            pub fn shared(&self) -> Arc<str> {
                self.0.clone()
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A cluster of the mesh (Istio's cluster ID, `multiCluster.clusterName`).
    ClusterId
);
name_type!(
    /// A network: endpoints on the same network reach each other directly; others go through
    /// the network's gateways. The empty name is the default network.
    NetworkId
);
name_type!(
    /// A service host: `reviews.prod.svc.cluster.local`, or a ServiceEntry host as written.
    Hostname
);
