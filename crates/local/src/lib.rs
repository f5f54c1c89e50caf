//! `strait up`: a whole multi-cluster mesh on one machine. A topology file names the clusters,
//! their networks and control planes; each pod of the clusters' manifests becomes a network
//! namespace holding its app and sidecar (traffic captured by the iptables rules a Kubernetes
//! init step installs), each network its own segment reachable from the others only through
//! its east-west gateways — or, without root, every process on this host's loopback, each pod
//! at its own address with explicit `bind` listeners. Planning is pure ([`topology`], [`plan`],
//! [`capture`], [`manifests`], [`loopback`]);
//! namespaces, processes and files are the edge ([`netns`], [`up`]); [`apps`] are the demo
//! workloads.

pub mod apps;
pub mod capture;
pub mod loopback;
pub mod manifests;
pub mod netns;
pub mod plan;
pub mod topology;
pub mod up;
