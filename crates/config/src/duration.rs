//! Durations as Istio and Kubernetes users write them: `30s`, `1m`, `1.5s`, `100ms`, `1h30m`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A non-negative duration, remembered with the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    value: StdDuration,
    text: String,
}

impl Duration {
    pub fn from_std(value: StdDuration) -> Self {
        Self {
            text: format!("{}ms", value.as_millis()),
            value,
        }
    }

    pub fn as_std(&self) -> StdDuration {
        self.value
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the duration has no part finer than a millisecond (Envoy's precision).
    pub fn is_whole_millis(&self) -> bool {
        self.value.subsec_nanos().is_multiple_of(1_000_000)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "\"{0}\" is not a duration: it must be a valid duration greater than 1ms, written as a number and a unit such as 5s, 100ms, 1m or 1h"
    )]
    Syntax(String),
    #[error("\"{0}\" is negative; durations must be at least 0")]
    Negative(String),
    #[error("\"{0}\" is too long")]
    Overflow(String),
}

/// Parses Go's `time.ParseDuration` syntax (which also covers protobuf's `1.5s` form).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let mut s = text.trim();
    if s.is_empty() {
        return Err(syntax());
    }
    let negative = s.starts_with('-');
    s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return Ok(Duration {
            value: StdDuration::ZERO,
            text: text.to_string(),
        });
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let number = &s[..num_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(syntax());
        }
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let nanos_per_unit: u128 = match &s[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(syntax()),
        };
        s = &s[unit_end..];
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| syntax())?
        };
        let mut part = whole
            .checked_mul(nanos_per_unit)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        let mut scale = nanos_per_unit;
        for digit in frac.chars().take(18) {
            scale /= 10;
            part += u128::from(digit.to_digit(10).ok_or_else(syntax)?) * scale;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(text.to_string()));
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(text.to_string()))?;
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration {
        value: StdDuration::new(secs, nanos),
        text: text.to_string(),
    })
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 5s or 100ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(DurationError::Syntax(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(DurationError::Syntax(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(DurationError::Syntax(v.to_string())))
            }
        }
        // `any`, so that a bare number gets the duration hint rather than a type error.
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_and_protobuf_forms_parse() {
        let ms = |t: &str| parse(t).unwrap().as_std().as_millis();
        assert_eq!(ms("300s"), 300_000);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("1.5s"), 1_500);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("100ms"), 100);
        assert_eq!(ms("0"), 0);
        assert_eq!(parse("250us").unwrap().as_std().as_micros(), 250);
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        assert!(matches!(parse("5"), Err(DurationError::Syntax(_))));
        assert!(matches!(parse("5 seconds"), Err(DurationError::Syntax(_))));
        assert!(matches!(parse("-1s"), Err(DurationError::Negative(_))));
        assert!(matches!(parse(""), Err(DurationError::Syntax(_))));
        assert!(parse("1.2.3s").is_err());
    }
}
