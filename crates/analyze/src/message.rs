//! Analysis messages: a level, a stable code, the resource, where it was written, and what to do.

use std::fmt;

use serde::Serialize;

/// How serious a message is. `strait analyze` exits non-zero when any `Error` is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// A kind of finding, with its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

macro_rules! codes {
    ($($konst:ident = $code:literal, $name:literal, $level:ident;)*) => {
        $(pub const $konst: Code = Code { code: $code, name: $name, level: Level::$level };)*
        /// Every code `strait analyze` can report.
        pub const ALL: &[Code] = &[$($konst),*];
    };
}

/// The catalogue of codes. Codes never change meaning once released.
pub mod codes {
    use super::{Code, Level};

    codes! {
        SCHEMA_VALIDATION_ERROR = "ST0001", "SchemaValidationError", Error;
        VALIDATION_WARNING = "ST0002", "ValidationWarning", Warning;
        DEPRECATED_FIELD = "ST0003", "DeprecatedField", Warning;
        NOT_SUPPORTED_BY_STRAIT = "ST0004", "NotSupportedByStrait", Info;
        DESTINATION_HOST_NOT_FOUND = "ST0101", "ReferencedHostNotFound", Error;
        SUBSET_NOT_FOUND = "ST0102", "ReferencedSubsetNotFound", Error;
        SUBSET_SELECTS_NO_WORKLOAD = "ST0103", "DestinationRuleSubsetSelectsNoWorkload", Warning;
        CONFLICTING_VIRTUAL_SERVICE_HOSTS = "ST0104", "ConflictingVirtualServiceHosts", Error;
        GATEWAY_SELECTS_NO_WORKLOAD = "ST0105", "GatewaySelectorMatchesNoWorkload", Error;
        SERVICE_ENTRY_ADDRESS_CONFLICT = "ST0106", "ServiceEntryAddressConflict", Error;
        SERVICE_ENTRY_HOST_CONFLICT = "ST0107", "ServiceEntryHostConflict", Warning;
        FAILOVER_WITHOUT_OUTLIER_DETECTION = "ST0108", "LocalityLbWithoutOutlierDetection", Warning;
        LOCALITY_WEIGHTS = "ST0109", "LocalityDistributeWeightsNot100", Error;
        MTLS_STRICT_BUT_TLS_DISABLED = "ST0110", "MtlsStrictButDestinationRuleDisablesTls", Error;
        TRAFFIC_SPLIT_BACKEND_NOT_FOUND = "ST0111", "TrafficSplitBackendNotFound", Error;
        PORT_PROTOCOL_UNDETERMINED = "ST0112", "PortProtocolUndetermined", Info;
        SERVICE_PORT_CONFLICT = "ST0113", "ServicePortProtocolConflict", Warning;
        GATEWAY_NOT_FOUND = "ST0114", "ReferencedGatewayNotFound", Error;
        GLOBAL_SUFFIX_HOST = "ST0115", "HostUnderGlobalTopLevelDomain", Info;
        DESTINATION_RULE_HOST_NOT_FOUND = "ST0116", "DestinationRuleHostNotFound", Warning;
        DELEGATE_NOT_FOUND = "ST0117", "VirtualServiceDelegateNotFound", Error;
        DELEGATE_ROUTE_OUTSIDE_ROOT = "ST0118", "VirtualServiceDelegateRouteOutsideRoot", Warning;
        INVALID_GATEWAY_CREDENTIAL = "ST0119", "InvalidGatewayCredential", Error;
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    pub name: &'static str,
    /// `Kind namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The field the message is about (`spec.http[0].route[0].destination.host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl Message {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            level: code.level,
            code: code.code,
            name: code.name,
            resource: None,
            file: None,
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] ", self.level, self.code)?;
        let mut origin = Vec::new();
        if let Some(r) = &self.resource {
            origin.push(r.clone());
        }
        if let Some(file) = &self.file {
            origin.push(match self.line {
                Some(l) if l > 0 => format!("{file}:{l}"),
                _ => file.clone(),
            });
        }
        if !origin.is_empty() {
            write!(f, "({}) ", origin.join(" "))?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}
