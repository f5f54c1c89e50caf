//! Authorization rules with Envoy's RBAC semantics: a filter has an action and named policies; a
//! policy matches when one of its permissions (what is asked for) and one of its principals (who
//! asks) match. An ALLOW filter lets through what some policy matches (none matching: denied,
//! even with no policies at all); a DENY filter stops what some policy matches; a LOG filter only
//! marks matches for the access log. Shadow filters are evaluated and reported, never enforced.

use serde::{Deserialize, Serialize};

use crate::StringMatch;
use crate::jwt::AuthAttribute;
use crate::route::HeaderMatch;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rbac {
    pub action: RbacAction,
    pub policies: Vec<RbacPolicy>,
    /// Evaluated and counted but not enforced (Istio's `istio.io/dry-run` policies).
    pub shadow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RbacAction {
    Allow,
    Deny,
    Log,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RbacPolicy {
    /// Istio's `ns[<namespace>]-policy[<name>]-rule[<index>]`.
    pub name: String,
    /// Any one matching is enough.
    pub permissions: Vec<Permission>,
    /// Any one matching is enough.
    pub principals: Vec<Principal>,
}

/// What the request or connection asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    /// A request header, pseudo-headers (`:method`) included.
    Header(HeaderMatch),
    /// The request's host (its authority without the port), compared in lower case.
    Host(StringMatch),
    /// The request path without its query.
    Path(StringMatch),
    /// The address the connection was made to (CIDR text).
    DestinationIp(String),
    DestinationPort(u16),
    /// The TLS server name the client asked for.
    ServerName(StringMatch),
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// The peer's SPIFFE ID verified by mTLS (`spiffe://td/ns/x/sa/y`); `Present` matches any
    /// authenticated peer. Never matches a plaintext connection.
    Authenticated(StringMatch),
    /// The connection's peer address (CIDR text).
    DirectRemoteIp(String),
    /// The original client: the last `X-Forwarded-For` entry, else the peer address.
    RemoteIp(String),
    Header(HeaderMatch),
    /// An attribute of the request's verified JWT; never matches a request without one.
    RequestAuth {
        attribute: AuthAttribute,
        value: StringMatch,
    },
}

impl Permission {
    /// Matches nothing.
    pub fn never() -> Permission {
        Permission::Not(Box::new(Permission::Any))
    }
}

impl Principal {
    /// Matches nobody.
    pub fn never() -> Principal {
        Principal::Not(Box::new(Principal::Any))
    }
}
