//! The time source. Everything that expires or stamps a time takes a [`Clock`], so tests move
//! time forward instead of sleeping, and nothing reads the system time behind their back.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> SystemTime;

    /// Whole seconds since the Unix epoch (0 for a clock set before 1970).
    fn unix_seconds(&self) -> u64 {
        since_epoch(self.now()).as_secs()
    }

    /// Whole milliseconds since the Unix epoch (0 for a clock set before 1970).
    fn unix_millis(&self) -> u64 {
        u64::try_from(since_epoch(self.now()).as_millis()).unwrap_or(u64::MAX)
    }
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to, for tests of expiry. Millisecond resolution.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn at(unix_seconds: u64) -> ManualClock {
        ManualClock(AtomicU64::new(unix_seconds.saturating_mul(1000)))
    }

    /// Move forward by whole seconds.
    pub fn advance(&self, seconds: u64) {
        self.advance_millis(seconds.saturating_mul(1000));
    }

    /// Move forward by milliseconds.
    pub fn advance_millis(&self, millis: u64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }

    /// Jump back by whole seconds, as a wall clock corrected by NTP or an operator can: for
    /// tests that what was used, revoked or spent stays so.
    pub fn rewind(&self, seconds: u64) {
        let millis = seconds.saturating_mul(1000);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_sub(millis))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_800_000_000);
        assert_eq!(c.unix_seconds(), 1_800_000_000);
        assert_eq!(c.unix_millis(), 1_800_000_000_000);
        c.advance_millis(1_500);
        assert_eq!(c.unix_seconds(), 1_800_000_001);
        assert_eq!(c.unix_millis(), 1_800_000_001_500);
        c.advance(2);
        assert_eq!(c.unix_seconds(), 1_800_000_003);
    }

    #[test]
    fn times_before_the_epoch_count_as_zero() {
        #[derive(Debug)]
        struct Early;
        impl Clock for Early {
            fn now(&self) -> SystemTime {
                UNIX_EPOCH - Duration::from_secs(5)
            }
        }
        assert_eq!(Early.unix_seconds(), 0);
        assert_eq!(Early.unix_millis(), 0);
    }
}
