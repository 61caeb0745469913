//! Durations as users write them in YAML: `500ms`, `30s`, `5m`, `1h`, `1h30m`.

use std::time::Duration;

/// The regular expression the CRD schema enforces on every duration field, so the API server
/// rejects a malformed duration before vigil ever sees it.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// The longest duration any field accepts (`interval`, `initialDelay`, pauses, delays): 30
/// days. Longer than any canary step or analysis a release needs, and far from the limits of
/// timestamp arithmetic (year 9999), so adding it to any real time can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest query `timeout` a metric may set: 5 minutes. A query holds one of a few
/// analysis slots per Prometheus while it runs; a gate query that needs longer is better
/// rewritten (a recording rule, a shorter range) than waited for.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration; write e.g. 30s, 5m or 1h")]
    ParseEmpty,
    /// A number was not followed by a unit.
    #[error("{input:?}: number without a unit (ms, s, m, h)")]
    ParseMissingUnit {
        /// The whole input.
        input: String,
    },
    /// A unit other than ms, s, m, h.
    #[error("{input:?}: unknown unit {unit:?} (use ms, s, m or h)")]
    ParseUnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// A unit without a number before it, or a stray character.
    #[error("{input:?}: expected a number at byte {at}")]
    ParseMissingNumber {
        /// The whole input.
        input: String,
        /// Byte offset of the problem.
        at: usize,
    },
    /// The duration does not fit in 64-bit milliseconds.
    #[error("{input:?}: duration too large")]
    ParseOverflow {
        /// The whole input.
        input: String,
    },
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1h30m` (units may repeat in any order, as in Go).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::ParseEmpty);
    }
    let bytes = input.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let number_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == number_start {
            return Err(DurationError::ParseMissingNumber {
                input: input.to_owned(),
                at: i,
            });
        }
        let number: u64 =
            input[number_start..i]
                .parse()
                .map_err(|_| DurationError::ParseOverflow {
                    input: input.to_owned(),
                })?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &input[unit_start..i];
        let factor_ms: u64 = match unit {
            "" => {
                return Err(DurationError::ParseMissingUnit {
                    input: input.to_owned(),
                });
            }
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => {
                return Err(DurationError::ParseUnknownUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        total_ms = number
            .checked_mul(factor_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| DurationError::ParseOverflow {
                input: input.to_owned(),
            })?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way users write them (`1h30m`, `45s`, `250ms`).
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_durations_with_a_named_problem() {
        assert_eq!(parse_duration(""), Err(DurationError::ParseEmpty));
        assert!(matches!(
            parse_duration("30"),
            Err(DurationError::ParseMissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::ParseUnknownUnit { unit, .. }) if unit == "d"
        ));
        assert!(matches!(
            parse_duration("m5"),
            Err(DurationError::ParseMissingNumber { at: 0, .. })
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::ParseMissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::ParseOverflow { .. })
        ));
    }

    #[test]
    fn a_hundred_quadrillion_hours_is_an_overflow_error_not_a_panic() {
        // Fits in u64, but not once multiplied into milliseconds.
        assert!(matches!(
            parse_duration("100000000000000000h"),
            Err(DurationError::ParseOverflow { .. })
        ));
        assert!(matches!(
            parse_duration("5124095576030h5124095576030h"),
            Err(DurationError::ParseOverflow { .. })
        ));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1h30m", "45s", "250ms", "2m5s"] {
            let parsed = parse_duration(text).expect("valid");
            assert_eq!(format_duration(parsed), text);
        }
    }
}
