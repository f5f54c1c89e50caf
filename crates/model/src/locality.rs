//! Where a workload runs: region, zone, subzone.

use std::fmt;

/// A locality; each part may be empty when unknown.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    pub fn new(region: &str, zone: &str, subzone: &str) -> Self {
        Self {
            region: region.into(),
            zone: zone.into(),
            subzone: subzone.into(),
        }
    }

    /// Parses Istio's `region/zone/subzone` form (WorkloadEntry, ServiceEntry endpoints).
    pub fn parse_slashed(s: &str) -> Self {
        let mut parts = s.splitn(3, '/');
        let mut next = || parts.next().unwrap_or("").to_string();
        Self {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    /// Parses the `istio-locality` pod label form, `region.zone.subzone`.
    pub fn parse_dotted(s: &str) -> Self {
        let mut parts = s.splitn(3, '.');
        let mut next = || parts.next().unwrap_or("").to_string();
        Self {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.subzone)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_written_forms_parse() {
        assert_eq!(
            Locality::parse_slashed("us-east/us-east-1a"),
            Locality::new("us-east", "us-east-1a", "")
        );
        assert_eq!(
            Locality::parse_dotted("r1.z1.s1"),
            Locality::new("r1", "z1", "s1")
        );
        assert!(Locality::parse_slashed("").is_empty());
    }
}
