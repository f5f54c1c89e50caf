//! Metadata on the wire: Envoy's `filter_metadata` structs, under the keys Istio uses (`istio`,
//! `envoy.transport_socket_match`) and Strait's own (`strait`) for what Istio does not carry.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

pub const ISTIO: &str = "istio";
pub const STRAIT: &str = "strait";
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

pub fn string(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_string())),
    }
}

pub fn number(v: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(v)),
    }
}

pub fn boolean(v: bool) -> Value {
    Value {
        kind: Some(Kind::BoolValue(v)),
    }
}

pub fn object(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value {
        kind: Some(Kind::StructValue(structure(fields))),
    }
}

pub fn list(values: Vec<Value>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue { values })),
    }
}

pub fn structure(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Struct {
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
    }
}

/// Metadata with the given filter namespaces (empty ones left out).
pub fn metadata(namespaces: Vec<(&'static str, Struct)>) -> Option<Metadata> {
    let filter_metadata: HashMap<String, Struct> = namespaces
        .into_iter()
        .filter(|(_, s)| !s.fields.is_empty())
        .map(|(k, s)| (k.to_string(), s))
        .collect();
    (!filter_metadata.is_empty()).then_some(Metadata {
        filter_metadata,
        ..Default::default()
    })
}

/// A field of a filter namespace.
pub fn field<'a>(m: Option<&'a Metadata>, namespace: &str, key: &str) -> Option<&'a Value> {
    m?.filter_metadata.get(namespace)?.fields.get(key)
}

pub fn as_str(v: Option<&Value>) -> Option<&str> {
    match v?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v?.kind.as_ref()? {
        Kind::BoolValue(b) => Some(*b),
        _ => None,
    }
}

pub fn as_number(v: Option<&Value>) -> Option<f64> {
    match v?.kind.as_ref()? {
        Kind::NumberValue(n) => Some(*n),
        _ => None,
    }
}

pub fn as_struct(v: Option<&Value>) -> Option<&Struct> {
    match v?.kind.as_ref()? {
        Kind::StructValue(s) => Some(s),
        _ => None,
    }
}

pub fn as_list(v: Option<&Value>) -> Option<&[Value]> {
    match v?.kind.as_ref()? {
        Kind::ListValue(l) => Some(&l.values),
        _ => None,
    }
}
