//! The service's single source of "now", and RFC 3339 formatting.
//!
//! Everything that depends on the current time (assertion expiry, zone
//! timestamps) asks a [`Clock`], so tests can pin or advance time instead of
//! sleeping. This module must never read the time anywhere but
//! [`SystemClock`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Whole seconds since the Unix epoch; times before it count as 0.
pub fn unix_seconds(time: SystemTime) -> u64 {
    since_epoch(time).as_secs()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
///
/// The width is fixed (microseconds, always six digits), so stored timestamps
/// sort chronologically as plain text, which the zone listing relies on.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let elapsed = since_epoch(time);
    let secs = elapsed.as_secs();
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60,
        elapsed.subsec_micros(),
    )
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`, restricted to dates after the epoch:
/// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_utc(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(at(951_782_400, 7)),
            "2000-02-29T00:00:00.000007Z"
        );
        assert_eq!(
            rfc3339_utc(at(1_709_251_199, 999_999)),
            "2024-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_utc(at(1_735_689_600, 0)),
            "2025-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_utc(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn text_order_is_time_order() {
        let earlier = rfc3339_utc(at(1_700_000_000, 999_999));
        let later = rfc3339_utc(at(1_700_000_001, 0));
        assert!(earlier < later);
    }

    #[test]
    fn unix_seconds_truncates_and_clamps() {
        assert_eq!(unix_seconds(at(42, 999_999)), 42);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
