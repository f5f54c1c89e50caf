//! The DNS proxy of Strait's sidecars (Istio's DNS proxying): answers the names of the mesh
//! from the name table the control plane sends (so remote-only services and ServiceEntry hosts
//! resolve without stub Services), forwards every other question to the upstream resolvers of
//! `resolv.conf`, and keeps answering from its last table while the control plane is away.

pub mod answer;
pub mod client;
pub mod exchange;
pub mod lookup;
pub mod resolv;
pub mod server;

pub use lookup::{Lookup, LookupContext};
pub use resolv::ResolvConf;
pub use server::{DnsServer, DnsStats};
