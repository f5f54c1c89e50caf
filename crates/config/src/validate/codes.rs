//! Stable codes of validation rules that `strait analyze` reports under their own name.

/// Locality failover configured where no outlier detection can trigger it.
pub const FAILOVER_WITHOUT_OUTLIER_DETECTION: &str = "ST0108";
/// `distribute` weights of one `from` that do not add up to 100.
pub const LOCALITY_WEIGHTS: &str = "ST0109";
