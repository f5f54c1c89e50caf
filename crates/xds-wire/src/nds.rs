//! Istio's NDS `NameTable` (`istio.networking.nds.v1`) on the wire, both ways. The message is
//! small and stable, so it is declared here with its field numbers rather than generated.

use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use strait_xds::dns::{NameInfo, NameTable};

use crate::from_envoy::{Rejected, unpack};

/// `istio.networking.nds.v1.NameTable`.
#[derive(Clone, PartialEq, Message)]
pub struct WireNameTable {
    #[prost(map = "string, message", tag = "1")]
    pub table: HashMap<String, WireNameInfo>,
}

/// `istio.networking.nds.v1.NameTable.NameInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct WireNameInfo {
    #[prost(string, repeated, tag = "1")]
    pub ips: Vec<String>,
    #[prost(string, tag = "2")]
    pub registry: String,
    #[prost(string, tag = "3")]
    pub shortname: String,
    #[prost(string, tag = "4")]
    pub namespace: String,
    #[prost(string, repeated, tag = "5")]
    pub alt_hosts: Vec<String>,
}

impl Name for WireNameTable {
    const NAME: &'static str = "NameTable";
    const PACKAGE: &'static str = "istio.networking.nds.v1";

    fn full_name() -> String {
        "istio.networking.nds.v1.NameTable".into()
    }

    fn type_url() -> String {
        strait_xds::ResourceType::NameTable.type_url().into()
    }
}

/// Strait's name table as Istio's message.
pub fn name_table(t: &NameTable) -> WireNameTable {
    WireNameTable {
        table: t
            .hosts
            .iter()
            .map(|(host, i)| {
                (
                    host.clone(),
                    WireNameInfo {
                        ips: i.ips.clone(),
                        registry: i.registry.clone(),
                        shortname: i.short_name.clone(),
                        namespace: i.namespace.clone(),
                        alt_hosts: i.alt_hosts.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// A received name table, rejected when an entry's address is not an IP.
pub fn name_table_from(any: &Any) -> Result<NameTable, Rejected> {
    let rejected = |reason: String| Rejected {
        resource: "name table".into(),
        reason,
    };
    let wire: WireNameTable = unpack(any, "resource").map_err(rejected)?;
    let mut hosts = std::collections::BTreeMap::new();
    for (host, info) in wire.table {
        if let Some(bad) = info.ips.iter().find(|ip| ip.parse::<IpAddr>().is_err()) {
            return Err(rejected(format!(
                "table[{host:?}].ips: {bad:?} is not an IP address"
            )));
        }
        hosts.insert(
            host,
            NameInfo {
                ips: info.ips,
                registry: info.registry,
                short_name: info.shortname,
                namespace: info.namespace,
                alt_hosts: info.alt_hosts,
            },
        );
    }
    Ok(NameTable { hosts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_any;

    #[test]
    fn a_name_table_survives_the_wire_and_a_bad_address_is_rejected() {
        let mut table = NameTable::default();
        table.hosts.insert(
            "helloworld.sample.svc.cluster.local".into(),
            NameInfo {
                ips: vec!["10.96.0.20".into()],
                registry: "Kubernetes".into(),
                short_name: "helloworld".into(),
                namespace: "sample".into(),
                alt_hosts: vec![],
            },
        );
        let any = to_any(&name_table(&table));
        assert_eq!(
            any.type_url,
            "type.googleapis.com/istio.networking.nds.v1.NameTable"
        );
        assert_eq!(name_table_from(&any).unwrap(), table);

        table
            .hosts
            .get_mut("helloworld.sample.svc.cluster.local")
            .unwrap()
            .ips
            .push("not-an-ip".into());
        let err = name_table_from(&to_any(&name_table(&table))).unwrap_err();
        assert!(err.reason.contains("\"not-an-ip\" is not an IP"), "{err}");
    }
}
