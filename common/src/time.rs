//! RFC 3339 timestamps, on the `time` crate.
//!
//! Formats are fixed-width in UTC (`Z`), so text order is time order wherever timestamps are
//! stored or compared as text.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Unix seconds as RFC 3339 UTC, whole seconds: `2027-01-15T08:00:00Z`. Out-of-range input
/// (beyond year 9999) is clamped to the epoch rather than failing a log line.
pub fn rfc3339_seconds(unix: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: `2027-01-15T08:00:00.123Z`.
pub fn rfc3339_millis(unix_millis: i64) -> String {
    let nanos = i128::from(unix_millis) * 1_000_000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// A system time as RFC 3339 UTC with microseconds: `2027-01-15T08:00:00.000007Z`. Fixed width,
/// so stored timestamps sort chronologically as text.
pub fn rfc3339_micros(time: SystemTime) -> String {
    let at = OffsetDateTime::from(time);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap_or_default()
}

/// Parse an RFC 3339 timestamp (`2027-01-15T08:00:00Z`, optional fraction, `Z` or `±hh:mm`)
/// into Unix milliseconds (finer fractions are truncated). `None` for anything else.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Parse an RFC 3339 timestamp into Unix seconds (the fraction is dropped).
pub fn parse_rfc3339_seconds(s: &str) -> Option<i64> {
    parse_rfc3339_millis(s).map(|ms| ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_seconds(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_709_251_199_007),
            "2024-02-29T23:59:59.007Z"
        );
        let at = UNIX_EPOCH + Duration::from_secs(951_782_400) + Duration::from_micros(7);
        assert_eq!(rfc3339_micros(at), "2000-02-29T00:00:00.000007Z");
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn text_order_is_time_order() {
        let earlier =
            UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_micros(999_999);
        let later = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
        assert!(rfc3339_micros(earlier) < rfc3339_micros(later));
    }

    #[test]
    fn parses_offsets_and_fractions_and_refuses_the_rest() {
        assert_eq!(
            parse_rfc3339_seconds("2024-02-29T23:59:59Z"),
            Some(1_709_251_199)
        );
        assert_eq!(
            parse_rfc3339_seconds("2024-03-01T01:59:59+02:00"),
            Some(1_709_251_199)
        );
        assert_eq!(
            parse_rfc3339_millis("2024-02-29T23:59:59.0071Z"),
            Some(1_709_251_199_007)
        );
        assert_eq!(parse_rfc3339_seconds("1969-12-31T23:59:59Z"), Some(-1));
        // RFC 3339 §5.6 allows a space for the `T`; the rest is refused.
        assert_eq!(
            parse_rfc3339_seconds("2024-02-29 23:59:59Z"),
            Some(1_709_251_199)
        );
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T23:59:59",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for t in [0, 1, 1_709_251_199, 4_107_542_400, 253_402_300_799] {
            assert_eq!(parse_rfc3339_seconds(&rfc3339_seconds(t)), Some(t));
        }
    }
}
