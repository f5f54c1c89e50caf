//! Workload identity: the SPIFFE ID `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Parses `spiffe://td/ns/<ns>/sa/<sa>`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let td = parts.next()?;
        if parts.next()? != "ns" {
            return None;
        }
        let ns = parts.next()?;
        if parts.next()? != "sa" {
            return None;
        }
        let sa = parts.next()?;
        if parts.next().is_some() || td.is_empty() || ns.is_empty() || sa.is_empty() {
            return None;
        }
        Some(Self::new(td, ns, sa))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip() {
        let id = SpiffeId::new("cluster.local", "sample", "helloworld");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/sample/sa/helloworld"
        );
        assert_eq!(SpiffeId::parse(&id.to_string()), Some(id));
        assert_eq!(SpiffeId::parse("spiffe://td/ns/a"), None);
        assert_eq!(SpiffeId::parse("https://td/ns/a/sa/b"), None);
    }
}
