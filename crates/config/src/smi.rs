//! SMI's `TrafficSplit` (`split.smi-spec.io/v1alpha1`–`v1alpha4`): weighted splits between
//! backend services, as Linkerd users write them.

use serde::Deserialize;

use crate::kube::IntOrString;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TrafficSplit {
    /// The root service clients call.
    pub service: String,
    #[serde(default)]
    pub backends: Vec<TrafficSplitBackend>,
    #[serde(default)]
    pub matches: Vec<TrafficSplitMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrafficSplitBackend {
    pub service: String,
    /// An integer (v1alpha2+) or a quantity such as `500m` (v1alpha1).
    pub weight: IntOrString,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub api_group: Option<String>,
}

/// A backend weight in thousandths: `1` → 1000, `"500m"` → 500.
pub fn weight_millis(weight: &IntOrString) -> Result<u64, String> {
    match weight {
        IntOrString::Int(v) if *v >= 0 => u64::try_from(*v)
            .ok()
            .and_then(|v| v.checked_mul(1000))
            .ok_or_else(|| format!("weight {v} is too large")),
        IntOrString::Int(v) => Err(format!("weight {v} is negative; weights must be 0 or more")),
        IntOrString::Str(s) => {
            let (digits, scale) = match s.strip_suffix('m') {
                Some(d) => (d, 1),
                None => (s.as_str(), 1000),
            };
            digits
                .parse::<u64>()
                .ok()
                .and_then(|v| v.checked_mul(scale))
                .ok_or_else(|| {
                    format!("weight \"{s}\" is not a whole number or a quantity such as 500m")
                })
        }
    }
}
