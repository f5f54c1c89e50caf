//! The proxy's side of xDS: the ADS client and the store of what it accepted.

pub mod client;
pub mod grpc;
pub mod store;
